"""No new attempt while the end of a delivered message cannot be stored: whatever
goes out then would be delivered again should the process die."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable

import pytest
from delivery_harness import BODY, Harness, metric, until

from elemta.common.config import Config
from elemta.common.envelope import Envelope, new_queue_id
from elemta.common.jetstream import (
    ENVELOPE_HEADER,
    EVENTS_STREAM,
    MESSAGES_STREAM,
    OUTCOMES_STREAM,
    ensure_streams,
    first_consumer_config,
)
from elemta.delivery import unrecorded
from elemta.delivery.unrecorded import Unrecorded

from support.smtpsink import SmtpSink


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def _is_waiting(task: asyncio.Task[None]) -> bool:
    for _ in range(5):  # let it run as far as it can
        await asyncio.sleep(0)
    return not task.done()


async def _first_attempts_without_streams(harness: Harness, routes: dict[str, str]) -> Config:
    """Delivery taking first attempts over ``routes``, with neither stream that
    stores their ends (records, reports) answering; its configuration."""
    cfg = harness.config()
    cfg = cfg.model_copy(update={"transport": cfg.transport.model_copy(update={"routes": routes})})
    await harness.js.add_consumer(MESSAGES_STREAM, first_consumer_config(cfg))
    await harness.start(cfg)
    await harness.js.delete_stream(EVENTS_STREAM)
    await harness.js.delete_stream(OUTCOMES_STREAM)
    return cfg


async def _store(harness: Harness, rcpt: str) -> None:
    """A message for ``rcpt`` stored as ingress stores it."""
    env = Envelope(new_queue_id(), "alice@sender.test", [rcpt], time.time(), size=len(BODY))
    await harness.js.publish(
        f"elemta.msg.{env.id}", BODY, headers={ENVELOPE_HEADER: env.to_header()}
    )


async def test_an_attempt_goes_at_once_while_ends_are_stored_promptly() -> None:
    clock = Clock()
    gate = Unrecorded(stall=0.25, clock=clock)
    with gate.storing():
        clock.now += 0.2
        await asyncio.wait_for(gate.turn(), 0.001)
    clock.now += 10
    await asyncio.wait_for(gate.turn(), 0.001)  # nothing being stored


async def test_attempts_wait_while_an_end_is_late_and_go_once_it_is_stored() -> None:
    clock = Clock()
    gate = Unrecorded(stall=0.25, clock=clock)
    held = metric("elemta_delivery_held_total")
    with gate.storing():
        clock.now += 0.3
        waiting = [asyncio.create_task(gate.turn()) for _ in range(3)]
        assert all([await _is_waiting(t) for t in waiting])
    await asyncio.wait_for(asyncio.gather(*waiting), 1)
    assert metric("elemta_delivery_held_total") - held == 3


async def test_a_late_end_still_holds_attempts_when_a_younger_one_is_stored() -> None:
    clock = Clock()
    gate = Unrecorded(stall=0.25, clock=clock)
    old = gate.storing()
    old.__enter__()
    clock.now += 0.2
    with gate.storing():
        clock.now += 0.1  # the old one has waited 0.3 s, the young one 0.1 s
        waiting = asyncio.create_task(gate.turn())
        assert await _is_waiting(waiting)
    assert await _is_waiting(waiting)
    old.__exit__(None, None, None)
    await asyncio.wait_for(waiting, 1)


async def test_an_end_that_fails_to_be_stored_releases_the_attempts_too() -> None:
    clock = Clock()
    gate = Unrecorded(stall=0.25, clock=clock)
    with pytest.raises(RuntimeError), gate.storing():
        clock.now += 1
        waiting = asyncio.create_task(gate.turn())
        assert await _is_waiting(waiting)
        raise RuntimeError("no PubAck")
    await asyncio.wait_for(waiting, 1)


async def test_a_hold_ends_after_its_longest_wait_whatever_happens(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    gate = Unrecorded(stall=0.25, hold_max=0.05, clock=clock)
    with gate.storing():
        clock.now += 1
        await asyncio.wait_for(gate.turn(), 5)
        assert gate.stalled()
    assert "waited" in caplog.text


async def test_no_new_message_goes_out_while_the_end_of_a_delivered_one_cannot_be_stored(
    harness: Harness,
    sink: SmtpSink,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(unrecorded, "STALL", 0.0)  # any end not stored yet holds
    caplog.set_level(logging.WARNING, logger="elemta.delivery.outcome")
    await harness.start(concurrency=4)
    route = f"smtp:[127.0.0.1]:{sink.port}"
    await harness.js.delete_stream(OUTCOMES_STREAM)  # a stream without a leader, say
    first = await harness.submit(route, ["first@example.test"])
    await until(lambda: "outcome not stored yet" in caplog.text)
    assert sink.recipients() == ["first@example.test"]  # delivered; its end waits

    held = metric("elemta_delivery_held_total")
    second = await harness.submit(route, ["second@example.test"])
    await until(lambda: metric("elemta_delivery_held_total") > held)
    assert sink.recipients() == ["first@example.test"]  # held: nothing sent

    await ensure_streams(harness.js, harness.config())  # the stream answers again
    assert (await harness.outcome(first)).results[0].status == "delivered"
    assert (await harness.outcome(second)).results[0].status == "delivered"
    assert sorted(sink.recipients()) == ["first@example.test", "second@example.test"]


async def test_a_first_attempt_waits_while_the_end_of_the_one_before_cannot_be_stored(
    harness: Harness, sink: SmtpSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same for mail straight from ELEMTA_MESSAGES, ended by its history record
    or, when that is late, by a report for the queue: neither stream answers."""
    monkeypatch.setattr(unrecorded, "STALL", 0.0)
    cfg = await _first_attempts_without_streams(
        harness, {"relay.test": f"smtp:[127.0.0.1]:{sink.port}"}
    )
    store = functools.partial(_store, harness)

    await store("first@relay.test")
    await until(lambda: sink.recipients() == ["first@relay.test"])
    held = metric("elemta_delivery_held_total")
    await store("second@relay.test")
    await until(lambda: metric("elemta_delivery_held_total") > held)
    assert sink.recipients() == ["first@relay.test"]

    await ensure_streams(harness.js, cfg)
    await until(lambda: len(sink.recipients()) == 2)
    await harness.first_all_acked()  # both ended, none offered again
    assert sorted(sink.recipients()) == ["first@relay.test", "second@relay.test"]


async def test_an_attempt_under_way_sends_no_end_of_data_while_an_earlier_end_waits(
    harness: Harness,
    make_sink: Callable[[], SmtpSink],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A message past its turn (waiting on its destination) when the stall begins is
    not exposed either: its transaction is left without the end of data, the
    destination delivers nothing, and the message goes once the stream is back."""
    monkeypatch.setattr(unrecorded, "STALL", 0.0)
    fast, slow = make_sink(), make_sink()
    slow.rcpt_delay = 1.0  # the destination thinks over RCPT: the attempt is under way
    routes = {
        "relay.test": f"smtp:[127.0.0.1]:{fast.port}",
        "slow.test": f"smtp:[127.0.0.1]:{slow.port}",
    }
    cfg = await _first_attempts_without_streams(harness, routes)
    store = functools.partial(_store, harness)

    unsent = metric("elemta_delivery_attempts_total", {"result": "unsent"})
    await store("late@slow.test")
    await until(lambda: len(slow.rcpt_log) == 1)  # under way, before the stall
    await store("first@relay.test")
    await until(lambda: fast.recipients() == ["first@relay.test"])  # its end waits
    await until(lambda: metric("elemta_delivery_attempts_total", {"result": "unsent"}) > unsent)
    assert slow.recipients() == []  # no end of data went to the slow destination

    slow.rcpt_delay = 0.0
    await ensure_streams(harness.js, cfg)
    await until(lambda: slow.recipients() == ["late@slow.test"], within=20)
    await harness.first_all_acked()
    assert slow.recipients() == ["late@slow.test"]
    assert fast.recipients() == ["first@relay.test"]
