"""Greylisting against a real nats-server: the KV bucket is shared by replicas."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import nats
import pytest
from nats.aio.client import Client as NATS

from elemta.policy.greylist import Greylist, client_network, open_greylist_bucket, triplet_key

from support.natsserver import NatsServer

CLIENT = {"client_ip": "192.0.2.10", "helo": "mx.example.org"}
SENDER = "alice@example.org"
RCPT = "bob@example.com"


@pytest.fixture
async def nc(nats_server: NatsServer) -> AsyncIterator[NATS]:
    conn = await nats.connect(nats_server.url)
    yield conn
    await conn.close()


async def greylist(nc: NATS, **kw: Any) -> Greylist:
    kv = await open_greylist_bucket(nc.jetstream(), ttl=60)
    kw.setdefault("delay", 0.5)
    kw.setdefault("trusted_networks", ["10.0.0.0/8"])
    kw.setdefault("timeout", 0.5)
    return Greylist(kv, **kw)


async def test_a_first_attempt_is_greylisted_with_451_4_7_1(nc: NATS) -> None:
    v = await (await greylist(nc)).rcpt(CLIENT, SENDER, RCPT)
    assert v is not None
    assert (v.action, v.code, v.enhanced) == ("tempfail", 451, "4.7.1")
    assert v.reason == "Greylisted, try again in 1 seconds"


async def test_a_retry_before_the_delay_is_still_greylisted(nc: NATS) -> None:
    g = await greylist(nc, delay=30)
    assert (await g.rcpt(CLIENT, SENDER, RCPT)) is not None
    v = await g.rcpt(CLIENT, SENDER, RCPT)
    assert v is not None and v.code == 451 and v.reason.startswith("Greylisted, try again in")


async def test_a_retry_after_the_delay_is_accepted_and_later_mail_at_once(nc: NATS) -> None:
    g = await greylist(nc)
    assert (await g.rcpt(CLIENT, SENDER, RCPT)) is not None
    await asyncio.sleep(0.6)
    assert (await g.rcpt(CLIENT, SENDER, RCPT)) is None
    assert (await g.rcpt(CLIENT, SENDER, RCPT)) is None


async def test_a_retry_from_another_host_of_the_same_slash_24_counts(nc: NATS) -> None:
    g = await greylist(nc)
    assert (await g.rcpt(CLIENT, SENDER, RCPT)) is not None
    await asyncio.sleep(0.6)
    assert (await g.rcpt({"client_ip": "192.0.2.200"}, SENDER, RCPT)) is None


async def test_a_retry_after_the_retry_window_starts_over(nc: NATS) -> None:
    g = await greylist(nc, delay=0.2, retry_window=0.4)
    assert (await g.rcpt(CLIENT, SENDER, RCPT)) is not None
    await asyncio.sleep(0.5)
    assert (await g.rcpt(CLIENT, SENDER, RCPT)) is not None


async def test_a_second_replica_on_the_same_bucket_sees_the_same_state(nc: NATS) -> None:
    first, second = await greylist(nc), await greylist(nc)
    assert (await first.rcpt(CLIENT, SENDER, RCPT)) is not None
    assert (await second.rcpt(CLIENT, SENDER, RCPT)) is not None  # too early there too
    await asyncio.sleep(0.6)
    assert (await second.rcpt(CLIENT, SENDER, RCPT)) is None
    assert (await first.rcpt(CLIENT, SENDER, RCPT)) is None  # passed, for both


async def test_two_replicas_racing_on_a_first_attempt_both_greylist(nc: NATS) -> None:
    a, b = await greylist(nc), await greylist(nc)
    results = await asyncio.gather(*(g.rcpt(CLIENT, SENDER, RCPT) for g in (a, b, a, b)))
    assert all(v is not None and v.code == 451 for v in results)


async def test_another_recipient_is_another_triplet(nc: NATS) -> None:
    g = await greylist(nc)
    assert (await g.rcpt(CLIENT, SENDER, RCPT)) is not None
    await asyncio.sleep(0.6)
    assert (await g.rcpt(CLIENT, SENDER, RCPT)) is None
    assert (await g.rcpt(CLIENT, SENDER, "carol@example.com")) is not None


async def test_the_null_sender_is_greylisted_too(nc: NATS) -> None:
    assert (await (await greylist(nc)).rcpt(CLIENT, "", RCPT)) is not None


async def test_a_trusted_client_is_never_greylisted(nc: NATS) -> None:
    g = await greylist(nc)
    assert (await g.rcpt({"client_ip": "10.1.2.3"}, SENDER, RCPT)) is None
    assert (await g.rcpt({"client_ip": "10.1.2.3"}, SENDER, RCPT)) is None


async def test_a_stopped_nats_server_accepts_the_mail_and_logs_why(
    nc: NATS, nats_server: NatsServer, caplog: pytest.LogCaptureFixture
) -> None:
    g = await greylist(nc)
    nats_server.stop()
    assert (await g.rcpt(CLIENT, SENDER, RCPT)) is None
    assert "greylist unavailable" in caplog.text


def test_the_triplet_key_uses_the_slash_24_or_slash_64_and_valid_key_characters() -> None:
    assert client_network("192.0.2.77") == "192.0.2.0/24"
    assert client_network("2001:db8:1:2:3:4:5:6") == "2001:db8:1:2::/64"
    assert triplet_key("192.0.2.1", "A@x", "b@y") == triplet_key("192.0.2.9", "a@x", "B@Y")
    assert triplet_key("2001:db8::1", "a@x", "b@y") == triplet_key("2001:db8::ffff", "a@x", "b@y")
    key = triplet_key("198.51.100.1", "we:ird@x", "b@y")
    assert all(c.isalnum() or c in "-/_=." for c in key)


async def test_a_bucket_that_exists_with_another_ttl_is_used_as_it_is(nc: NATS) -> None:
    g = Greylist(await open_greylist_bucket(nc.jetstream(), ttl=60), delay=0.3)
    assert (await g.rcpt(CLIENT, SENDER, RCPT)) is not None
    again = Greylist(await open_greylist_bucket(nc.jetstream(), ttl=120), delay=0.3)
    await asyncio.sleep(0.4)
    assert (await again.rcpt(CLIENT, SENDER, RCPT)) is None  # the same records
