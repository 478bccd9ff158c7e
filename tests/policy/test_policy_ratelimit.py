"""Rate limits against a real nats-server: counters shared by every replica."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import nats
import pytest
from nats.aio.client import Client as NATS

from elemta.policy.ratelimit import RateLimiter, open_ratelimit_bucket

from support.natsserver import NatsServer

CLIENT = {"client_ip": "192.0.2.10"}


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def nc(nats_server: NatsServer) -> AsyncIterator[NATS]:
    conn = await nats.connect(nats_server.url)
    yield conn
    await conn.close()


async def limiter(nc: NATS, **kw: Any) -> RateLimiter:
    kv = await open_ratelimit_bucket(nc.jetstream(), ttl=60)
    kw.setdefault("per_ip", (3, 60.0))
    kw.setdefault("per_sender", None)
    kw.setdefault("trusted_networks", ["10.0.0.0/8"])
    kw.setdefault("timeout", 0.5)
    return RateLimiter(kv, **kw)


async def test_n_transactions_are_allowed_then_450_4_7_1(nc: NATS) -> None:
    rl = await limiter(nc, clock=Clock())
    assert [await rl.mail(CLIENT, "a@example.org") for _ in range(3)] == [None] * 3
    v = await rl.mail(CLIENT, "a@example.org")
    assert v is not None
    assert (v.action, v.code, v.enhanced) == ("tempfail", 450, "4.7.1")
    assert v.reason == "Rate limit exceeded, try again later"
    assert (await rl.mail({"client_ip": "192.0.2.11"}, "a@example.org")) is None  # another IP


async def test_the_limit_is_shared_across_two_limiter_instances(nc: NATS) -> None:
    clock = Clock()
    a, b = await limiter(nc, clock=clock), await limiter(nc, clock=clock)
    assert (await a.mail(CLIENT, "")) is None
    assert (await b.mail(CLIENT, "")) is None
    assert (await a.mail(CLIENT, "")) is None
    assert (await b.mail(CLIENT, "")) is not None
    assert (await a.mail(CLIENT, "")) is not None


async def test_concurrent_replicas_lose_no_increment(nc: NATS) -> None:
    clock = Clock()
    replicas = [await limiter(nc, clock=clock, per_ip=(10, 60.0)) for _ in range(4)]
    results = await asyncio.gather(*(replicas[i % 4].mail(CLIENT, "") for i in range(16)))
    assert sum(v is None for v in results) == 10


async def test_a_new_window_resets_the_count(nc: NATS) -> None:
    clock = Clock()
    rl = await limiter(nc, clock=clock)
    for _ in range(3):
        assert (await rl.mail(CLIENT, "")) is None
    assert (await rl.mail(CLIENT, "")) is not None
    clock.now += 60
    assert (await rl.mail(CLIENT, "")) is None


async def test_the_per_sender_limit_counts_across_client_ips(nc: NATS) -> None:
    rl = await limiter(nc, per_ip=None, per_sender=(2, 60.0), clock=Clock())
    assert (await rl.mail({"client_ip": "192.0.2.1"}, "Spam@Example.org")) is None
    assert (await rl.mail({"client_ip": "198.51.100.1"}, "spam@example.org")) is None
    v = await rl.mail({"client_ip": "203.0.113.1"}, "spam@example.org")
    assert v is not None and v.code == 450
    assert (await rl.mail({"client_ip": "203.0.113.1"}, "")) is None  # bounces: no sender limit


async def test_a_trusted_client_is_never_limited(nc: NATS) -> None:
    rl = await limiter(nc, per_ip=(1, 60.0), clock=Clock())
    for _ in range(3):
        assert (await rl.mail({"client_ip": "10.0.0.5"}, "a@example.org")) is None


async def test_a_stopped_nats_server_accepts_the_mail_and_logs_why(
    nc: NATS, nats_server: NatsServer, caplog: pytest.LogCaptureFixture
) -> None:
    rl = await limiter(nc, per_ip=(1, 60.0), clock=Clock())
    assert (await rl.mail(CLIENT, "")) is None
    nats_server.stop()
    assert (await rl.mail(CLIENT, "")) is None
    assert "rate limiter unavailable" in caplog.text
