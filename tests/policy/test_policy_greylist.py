"""Greylisting against a real nats-server: the KV bucket is shared by replicas."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import nats
import pytest
from nats.aio.client import Client as NATS

from elemta.policy.greylist import Greylist, client_network, open_greylist_bucket, triplet_key

from support.clock import FakeClock
from support.natsserver import NatsServer

CLIENT = {"client_ip": "192.0.2.10", "helo": "mx.example.org"}
SENDER = "alice@example.org"
RCPT = "bob@example.com"


@pytest.fixture
async def nc(nats_server: NatsServer) -> AsyncIterator[NATS]:
    conn = await nats.connect(nats_server.url)
    yield conn
    await conn.close()


async def greylist(nc: NATS, clock: FakeClock, **kw: Any) -> Greylist:
    """Postgrey's defaults (delay 300 s, retry window 4 h), on the test's clock."""
    kv = await open_greylist_bucket(nc.jetstream(), ttl=60)
    kw.setdefault("delay", 300.0)
    kw.setdefault("trusted_networks", ["10.0.0.0/8"])
    kw.setdefault("timeout", 0.5)
    return Greylist(kv, clock=clock, **kw)


async def test_a_first_attempt_is_greylisted_with_451_4_7_1(nc: NATS, clock: FakeClock) -> None:
    v = await (await greylist(nc, clock)).rcpt(CLIENT, SENDER, RCPT)
    assert v is not None
    assert (v.action, v.code, v.enhanced) == ("tempfail", 451, "4.7.1")
    assert v.reason == "Greylisted, try again in 300 seconds"


async def test_a_retry_before_the_delay_is_still_greylisted(nc: NATS, clock: FakeClock) -> None:
    g = await greylist(nc, clock)
    assert (await g.rcpt(CLIENT, SENDER, RCPT)) is not None
    clock.advance(200)
    v = await g.rcpt(CLIENT, SENDER, RCPT)
    assert v is not None and v.code == 451
    assert v.reason == "Greylisted, try again in 100 seconds"


async def test_a_retry_after_the_delay_is_accepted_and_later_mail_at_once(
    nc: NATS, clock: FakeClock
) -> None:
    g = await greylist(nc, clock)
    assert (await g.rcpt(CLIENT, SENDER, RCPT)) is not None
    clock.advance(301)
    assert (await g.rcpt(CLIENT, SENDER, RCPT)) is None
    assert (await g.rcpt(CLIENT, SENDER, RCPT)) is None


async def test_a_retry_from_another_host_of_the_same_slash_24_counts(
    nc: NATS, clock: FakeClock
) -> None:
    g = await greylist(nc, clock)
    assert (await g.rcpt(CLIENT, SENDER, RCPT)) is not None
    clock.advance(301)
    assert (await g.rcpt({"client_ip": "192.0.2.200"}, SENDER, RCPT)) is None


async def test_a_retry_after_the_retry_window_starts_over(nc: NATS, clock: FakeClock) -> None:
    g = await greylist(nc, clock, retry_window=4 * 3600.0)
    assert (await g.rcpt(CLIENT, SENDER, RCPT)) is not None
    clock.advance(4 * 3600 + 1)
    v = await g.rcpt(CLIENT, SENDER, RCPT)
    assert v is not None and v.reason == "Greylisted, try again in 300 seconds"


async def test_a_second_replica_on_the_same_bucket_sees_the_same_state(
    nc: NATS, clock: FakeClock
) -> None:
    first, second = await greylist(nc, clock), await greylist(nc, clock)
    assert (await first.rcpt(CLIENT, SENDER, RCPT)) is not None
    assert (await second.rcpt(CLIENT, SENDER, RCPT)) is not None  # too early there too
    clock.advance(301)
    assert (await second.rcpt(CLIENT, SENDER, RCPT)) is None
    assert (await first.rcpt(CLIENT, SENDER, RCPT)) is None  # passed, for both


async def test_two_replicas_racing_on_a_first_attempt_both_greylist(
    nc: NATS, clock: FakeClock
) -> None:
    a, b = await greylist(nc, clock), await greylist(nc, clock)
    results = await asyncio.gather(*(g.rcpt(CLIENT, SENDER, RCPT) for g in (a, b, a, b)))
    assert all(v is not None and v.code == 451 for v in results)


async def test_another_recipient_is_another_triplet(nc: NATS, clock: FakeClock) -> None:
    g = await greylist(nc, clock)
    assert (await g.rcpt(CLIENT, SENDER, RCPT)) is not None
    clock.advance(301)
    assert (await g.rcpt(CLIENT, SENDER, RCPT)) is None
    assert (await g.rcpt(CLIENT, SENDER, "carol@example.com")) is not None


async def test_the_null_sender_is_greylisted_too(nc: NATS, clock: FakeClock) -> None:
    assert (await (await greylist(nc, clock)).rcpt(CLIENT, "", RCPT)) is not None


async def test_a_trusted_client_is_never_greylisted(nc: NATS, clock: FakeClock) -> None:
    g = await greylist(nc, clock)
    assert (await g.rcpt({"client_ip": "10.1.2.3"}, SENDER, RCPT)) is None
    assert (await g.rcpt({"client_ip": "10.1.2.3"}, SENDER, RCPT)) is None


async def test_a_stopped_nats_server_accepts_the_mail_and_logs_why(
    nc: NATS, nats_server: NatsServer, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    g = await greylist(nc, clock)
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


async def test_a_bucket_that_exists_with_another_ttl_is_used_as_it_is(
    nc: NATS, clock: FakeClock
) -> None:
    g = Greylist(await open_greylist_bucket(nc.jetstream(), ttl=60), delay=300, clock=clock)
    assert (await g.rcpt(CLIENT, SENDER, RCPT)) is not None
    again = Greylist(await open_greylist_bucket(nc.jetstream(), ttl=120), delay=300, clock=clock)
    clock.advance(301)
    assert (await again.rcpt(CLIENT, SENDER, RCPT)) is None  # the same records
