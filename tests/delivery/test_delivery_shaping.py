"""Traffic shaping's shared state on a real nats-server: leases, message slots, suspensions."""

from __future__ import annotations

import asyncio
import time

import nats

from elemta.common.config import Route, ShapingSettings
from elemta.common.envelope import DeliveryJob
from elemta.common.replies import Reply
from elemta.common.suspensions import Suspensions
from elemta.delivery.outcome import Delivery
from elemta.delivery.shaping import Backlogged, Shaper, destination_of

from support.clock import FakeClock
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


def test_rules_merge_defaults_then_the_most_specific_destination() -> None:
    settings = ShapingSettings.model_validate(
        {
            "max_message_rate": 50.0,
            "destinations": {
                ".example.test": {"max_connections": 3},
                "mail.example.test": {"max_connections": 1, "max_message_rate": 2.0},
            },
        }
    )
    shaper = Shaper(settings, None, None, "p")  # type: ignore[arg-type]
    rule = shaper.rule_for(_job("a.example.test"), Route(kind="mx"))
    assert rule is not None and (rule.max_connections, rule.max_message_rate) == (3, 50.0)
    rule = shaper.rule_for(_job("mail.example.test"), Route(kind="mx"))
    assert rule is not None and (rule.max_connections, rule.max_message_rate) == (1, 2.0)
    unlimited = Shaper(ShapingSettings(), None, None, "p")  # type: ignore[arg-type]
    assert unlimited.rule_for(_job(), Route(kind="mx")) is None
    relay = Route(kind="smtp", host="127.0.0.1", port=2525, mx_lookup=False)
    assert destination_of(_job(), relay) == "[127.0.0.1]:2525"


async def test_two_shapers_never_hold_more_leases_than_the_limit(nats_server: NatsServer) -> None:
    settings = ShapingSettings.model_validate(
        {"slot_wait": 5.0, "destinations": {"example.test": {"max_connections": 2}}}
    )
    nc, shapers = await _shapers(nats_server, settings)
    holding = peak = 0

    async def send(pacer, pooled):  # type: ignore[no-untyped-def]
        nonlocal holding, peak
        assert not pooled  # a connection limit means a session of its own
        holding += 1
        peak = max(peak, holding)
        await asyncio.sleep(0.05)
        holding -= 1
        return Delivery("h", [Reply(250, "2.0.0", "ok").result("r@example.test")])

    async def one(shaper: Shaper) -> str:
        rule = shaper.rule_for(_job(), Route(kind="mx"))
        assert rule is not None
        try:
            await shaper.deliver(_job(), rule, send, 1)
        except Backlogged:
            return "backlogged"
        return "sent"

    results = await asyncio.gather(*(one(shapers[i % 2]) for i in range(12)))
    await nc.close()
    assert peak == 2
    # Only max_connections jobs per process wait; the others are handed back at once.
    assert results.count("sent") >= 4 and "backlogged" in results


async def test_message_slots_are_spaced_by_the_rate_across_shapers(nats_server: NatsServer) -> None:
    settings = ShapingSettings.model_validate({"max_message_rate": 10.0, "slot_wait": 5.0})
    nc, shapers = await _shapers(nats_server, settings)
    rule = shapers[0].rule_for(_job(), Route(kind="mx"))
    assert rule is not None
    times: list[float] = []

    async def paced(shaper: Shaper) -> None:
        await shaper.pace(rule)
        times.append(time.monotonic())

    await asyncio.gather(*(paced(shapers[i % 2]) for i in range(8)))
    await nc.close()
    assert most_in_any_second(times) <= 10 - 2  # 8 messages: all within ~0.75 s
    assert max(times) - min(times) >= 0.7  # seven gaps of at least a tenth


async def test_slots_further_away_than_slot_wait_hand_the_job_back(nats_server: NatsServer) -> None:
    settings = ShapingSettings.model_validate({"max_message_rate": 1.0, "slot_wait": 1.5})
    nc, [shaper] = await _shapers(nats_server, settings, 1)
    rule = shaper.rule_for(_job(), Route(kind="mx"))
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
    rule = a.rule_for(_job(), Route(kind="mx"))
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
