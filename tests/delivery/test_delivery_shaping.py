"""Traffic shaping's shared state on a real nats-server: leases, message slots, suspensions."""

from __future__ import annotations

import asyncio
import time

import nats
import nats.js.errors
import pytest

from elemta.common.config import DnsSettings, Route, ShapingSettings
from elemta.common.envelope import DeliveryJob
from elemta.common.replies import Reply
from elemta.common.resolver import NoSuchDomain, Resolver
from elemta.common.suspensions import Suspensions
from elemta.delivery.outcome import Delivery
from elemta.delivery.pool import Pool
from elemta.delivery.shaping import Backlogged, Shaper

from support.clock import FakeClock
from support.dnsserver import DnsServer
from support.natsserver import NatsServer
from support.shapingsink import most_in_any_second


def _job(domain: str = "example.test") -> DeliveryJob:
    return DeliveryJob(
        id="Q1", dest=f"mx:{domain}", route={"kind": "mx"}, domain=domain,
        sender="a@b.test", recipients=[f"r@{domain}"], msg_seq=1,
    )  # fmt: skip


async def _shapers(server: NatsServer, settings: ShapingSettings, n: int = 2, clock=time.time):  # type: ignore[no-untyped-def]
    nc = await nats.connect(server.url)
    js = nc.jetstream()
    leases = await js.create_key_value(bucket="ELEMTA_SHAPING", ttl=30)
    susp = await Suspensions.open(js, clock)
    await susp.start()
    return nc, [Shaper(settings, leases, susp, f"p{i}", clock=clock) for i in range(n)]


async def test_two_domains_with_mx_hosts_at_one_provider_share_its_connection_limit(
    nats_server: NatsServer, dns_server: DnsServer, sessions: type[_Session]
) -> None:
    for domain, mx in (("a.test", "mx1.bigmail.test"), ("b.test", "mx2.bigmail.test")):
        dns_server.add(domain, "MX", f"10 {mx}.")
        dns_server.add(mx, "A", "127.0.0.1")
    dns_server.add("c.test", "MX", "10 mx.c.test.")
    dns_server.add("mx.c.test", "A", "127.0.0.1")
    settings = ShapingSettings.model_validate(
        {
            "slot_wait": 10.0,
            "providers": {"bigmail": {"mx_suffixes": [".bigmail.test"], "max_connections": 2}},
        }
    )
    resolver = Resolver(DnsSettings(nameservers=["127.0.0.1"], port=dns_server.port, timeout=2))
    nc, shapers = await _shapers(nats_server, settings)
    for shaper in shapers:
        shaper.rules.resolver = resolver
    pools = [Pool[_Session](8, idle_timeout=5.0) for _ in shapers]
    rule_c = await shapers[0].rule_for(_job("c.test"), Route(kind="mx"))
    assert rule_c is None  # its MX is at no provider: no limit
    with pytest.raises(NoSuchDomain):  # the job's result, as the transport would find
        await shapers[0].rule_for(_job("nowhere.test"), Route(kind="mx"))
    asked = dns_server.queries
    relay = Route(kind="smtp", host="127.0.0.1", port=25)  # an address: no MX to ask for
    assert await shapers[0].rule_for(_job(), relay) is None and dns_server.queries == asked

    async def one(i: int, domain: str) -> None:
        shaper = shapers[i % 2]
        rule = await shaper.rule_for(_job(domain), Route(kind="mx"))
        assert rule is not None and rule.dest == "provider:bigmail"
        await shaper.deliver(_job(domain), rule, _sender(pools[i % 2]), 1)

    # A job for each domain in each process: the four share the provider's two
    # connections (a limit per domain would have let all four open at once).
    await asyncio.gather(
        *(one(i, d) for i, d in enumerate(["a.test", "a.test", "b.test", "b.test"]))
    )
    assert sessions.peak == 2 and sessions.opened >= 2
    for pool in pools:
        await pool.close()
    await nc.close()


class _Session:
    """A fake pooled session that counts the connections open to the peer."""

    open = 0
    peak = 0
    opened = 0
    clean = False  # always RSET before the next message

    def __init__(self) -> None:
        _Session.open += 1
        _Session.opened += 1
        _Session.peak = max(_Session.peak, _Session.open)
        self.connected = True
        self.quits = 0

    @property
    def usable(self) -> bool:
        return self.connected

    async def reset(self) -> bool:
        return True

    async def quit(self) -> None:
        self.quits += 1

    def close(self) -> None:
        if self.connected:
            self.connected = False
            _Session.open -= 1


@pytest.fixture
def sessions() -> type[_Session]:
    _Session.open = _Session.peak = _Session.opened = 0
    return _Session


def _sender(pool: Pool[_Session], hold: float = 0.05):  # type: ignore[no-untyped-def]
    """``send`` for Shaper.deliver: one message over a session pooled under the claim."""

    async def send(pacer, claim):  # type: ignore[no-untyped-def]
        async def opener() -> _Session:
            return _Session()

        key = ("127.0.0.1", 25, claim.key)
        session = await pool.acquire(key, opener, claim)
        try:
            if pacer is not None:
                await pacer()
            await asyncio.sleep(hold)
        finally:
            pool.release(key, session, True)
        return Delivery("h", [Reply(250, "2.0.0", "ok").result("r@example.test")])

    return send


async def _leases_held(nc) -> list[str]:  # type: ignore[no-untyped-def]
    kv = await nc.jetstream().key_value("ELEMTA_SHAPING")
    try:
        return [k for k in await kv.keys() if k.startswith("c.")]
    except nats.js.errors.NoKeysError:
        return []


async def test_two_processes_never_open_more_connections_than_the_limit_and_reuse_them(
    nats_server: NatsServer, sessions: type[_Session]
) -> None:
    settings = ShapingSettings.model_validate(
        {
            "slot_wait": 10.0,
            "lease_idle_timeout": 3.0,
            "destinations": {"example.test": {"max_connections": 2}},
        }
    )
    nc, shapers = await _shapers(nats_server, settings)
    pools = [Pool[_Session](8, idle_timeout=5.0) for _ in shapers]

    async def one(i: int) -> str:
        shaper = shapers[i % 2]
        rule = await shaper.rule_for(_job(), Route(kind="mx"))
        assert rule is not None
        try:
            await shaper.deliver(_job(), rule, _sender(pools[i % 2]), 1)
        except Backlogged:
            return "backlogged"
        return "sent"

    results = await asyncio.gather(*(one(i) for i in range(12)))
    assert sessions.peak == 2
    # Only max_connections jobs per process wait; the others are handed back at once.
    assert results.count("sent") >= 4 and "backlogged" in results
    # Sessions went back to the pool with their leases and carry the next messages.
    opened = sessions.opened
    rule = await shapers[1].rule_for(_job(), Route(kind="mx"))
    assert rule is not None
    for _ in range(3):
        await shapers[1].deliver(_job(), rule, _sender(pools[1], hold=0), 1)
    assert sessions.opened == opened and sessions.peak == 2
    assert len(await _leases_held(nc)) == sessions.open
    for pool in pools:
        await pool.close()
    assert sessions.open == 0 and await _leases_held(nc) == []
    await nc.close()


async def test_an_idle_session_gives_its_lease_back_after_quit_once_the_idle_time_is_over(
    nats_server: NatsServer, sessions: type[_Session]
) -> None:
    settings = ShapingSettings.model_validate({"max_connections": 1})
    nc, [shaper] = await _shapers(nats_server, settings, 1)
    pool = Pool[_Session](8, idle_timeout=10.0)
    rule = await shaper.rule_for(_job(), Route(kind="mx"))
    assert rule is not None
    await shaper.deliver(_job(), rule, _sender(pool, hold=0), 1)
    assert len(await _leases_held(nc)) == 1 and sessions.open == 1  # idle, still leased
    for _ in range(200):  # the lease is deleted after QUIT, 1 s (lease_idle_timeout) on
        if not await _leases_held(nc):
            break
        await asyncio.sleep(0.05)
    assert await _leases_held(nc) == [] and sessions.open == 0
    await pool.close()
    await nc.close()


async def test_a_connection_carries_at_most_max_messages_per_connection(
    nats_server: NatsServer, sessions: type[_Session]
) -> None:
    settings = ShapingSettings.model_validate(
        {"max_connections": 1, "max_messages_per_connection": 3}
    )
    nc, [shaper] = await _shapers(nats_server, settings, 1)
    pool = Pool[_Session](8, idle_timeout=5.0)
    rule = await shaper.rule_for(_job(), Route(kind="mx"))
    assert rule is not None
    for _ in range(7):
        await shaper.deliver(_job(), rule, _sender(pool, hold=0), 1)
    assert sessions.opened == 3 and sessions.peak == 1  # 3 + 3 + 1
    await pool.close()
    await nc.close()


async def test_message_slots_are_spaced_by_the_rate_across_shapers(nats_server: NatsServer) -> None:
    settings = ShapingSettings.model_validate({"max_message_rate": 10.0, "slot_wait": 5.0})
    nc, shapers = await _shapers(nats_server, settings)
    rule = await shapers[0].rule_for(_job(), Route(kind="mx"))
    assert rule is not None
    times: list[float] = []

    async def paced(shaper: Shaper) -> None:
        await shaper.pace(rule)
        times.append(time.monotonic())

    await asyncio.gather(*(paced(shapers[i % 2]) for i in range(8)))
    await nc.close()
    assert most_in_any_second(times) <= 10 - 2  # 8 messages: all within ~0.75 s
    assert max(times) - min(times) >= 0.7  # seven gaps of at least a tenth


async def test_fast_rates_take_slots_in_windows_with_fewer_writes_and_still_keep_the_rate(
    nats_server: NatsServer,
) -> None:
    settings = ShapingSettings.model_validate({"max_message_rate": 100.0, "slot_wait": 5.0})
    nc, shapers = await _shapers(nats_server, settings)
    writes = 0
    kv = shapers[0].leases  # one bucket handle, shared by both
    update, create = kv.update, kv.create

    async def counted_update(*a, **kw):  # type: ignore[no-untyped-def]
        nonlocal writes
        revision = await update(*a, **kw)
        writes += 1
        return revision

    async def counted_create(*a, **kw):  # type: ignore[no-untyped-def]
        nonlocal writes
        revision = await create(*a, **kw)
        writes += 1
        return revision

    kv.update, kv.create = counted_update, counted_create  # type: ignore[method-assign]
    rule = await shapers[0].rule_for(_job(), Route(kind="mx"))
    assert rule is not None
    times: list[float] = []

    async def paced(shaper: Shaper) -> None:
        await shaper.pace(rule)
        times.append(time.monotonic())

    await asyncio.gather(*(paced(shapers[i % 2]) for i in range(150)))
    await nc.close()
    assert most_in_any_second(times) <= 100
    assert max(times) - min(times) >= 1.2  # 150 at 100/s (less 10 %)
    assert writes <= 150 / 3  # windows of 4 slots: one schedule write per 4 messages


async def test_slots_further_away_than_slot_wait_hand_the_job_back(nats_server: NatsServer) -> None:
    settings = ShapingSettings.model_validate({"max_message_rate": 1.0, "slot_wait": 1.5})
    nc, [shaper] = await _shapers(nats_server, settings, 1)
    rule = await shaper.rule_for(_job(), Route(kind="mx"))
    assert rule is not None
    results = await asyncio.gather(
        *(shaper.pace(rule) for _ in range(3)), return_exceptions=True
    )  # slots now, in a second, in two: the last is too far away
    await nc.close()
    [late] = [r for r in results if r is not None]
    assert isinstance(late, Backlogged) and late.delay > 1.5


async def test_a_matching_reply_suspends_the_recipient_domain_for_its_time(
    nats_server: NatsServer, clock: FakeClock
) -> None:
    settings = ShapingSettings.model_validate(
        {"suspend_on": ["^421 .*try again later"], "suspend_for": 60.0}
    )
    nc, [a] = await _shapers(nats_server, settings, 1, clock=clock)
    rule = await a.rule_for(_job(), Route(kind="mx"))
    assert rule is not None

    async def busy(pacer, pooled):  # type: ignore[no-untyped-def]
        return Delivery("h", [Reply(421, "4.7.0", "Try again later").result("r@example.test")])

    async def fine(pacer, pooled):  # type: ignore[no-untyped-def]
        return Delivery("h", [Reply(250, "2.0.0", "Ok").result("r@example.test")])

    await a.deliver(_job(), rule, fine, 1)
    assert a.suspensions is not None and a.suspensions.active("example.test") is None
    await a.deliver(_job(), rule, busy, 1)
    # Another process sees it through the bucket, as it sees an administrator's.
    other = await Suspensions.open(nc.jetstream(), clock)
    await other.start()
    held = other.active("example.test")
    assert held is not None and held.until == clock() + 60.0 and "Try again later" in held.reason
    clock.advance(61)
    assert other.active("example.test") is None
    await other.stop()
    await a.suspensions.stop()
    await nc.close()
