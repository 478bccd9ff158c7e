"""Mail owed that no consumer will offer again (a stray) is handed to the queue;
finished and owned copies are not strays."""

from __future__ import annotations

import json
import time

import pytest
from queue_harness import QueueHarness, eventually

from elemta.common.history import batch_subject
from elemta.common.jetstream import FIRST_CONSUMER, MESSAGES_STREAM, STATE_BUCKET
from elemta.queue.leftovers import Leftovers


async def history(harness: QueueHarness, qid: str, *types: str) -> None:
    records = [{"type": t, "at": time.time(), "id": qid} for t in types]
    await harness.js.publish(f"elemta.events.{qid}", json.dumps(records).encode())


async def still_stored(harness: QueueHarness, seq: int) -> bool:
    try:
        await harness.js.get_msg(MESSAGES_STREAM, seq=seq)
    except Exception:
        return False
    return True


async def test_finished_or_owned_copies_are_not_strays_and_are_left_alone(
    harness: QueueHarness,
) -> None:
    """Copies whose history says ``done`` are the bulk removal's; copies the queue
    holds are the queue's: the sweep hands over neither and deletes nothing."""
    await harness.start_queue()
    finished, finished_seq = await harness.store(["b@a.test"], manual=True)
    await history(harness, finished.id, "accepted", "attempt", "delivered", "done")
    ended, ended_seq = await harness.store(["f@a.test"], manual=True)
    records = {
        ended.id: [{"type": t, "at": time.time(), "id": ended.id} for t in ("accepted", "done")]
    }
    await harness.js.publish(batch_subject(ended.id), json.dumps(records).encode())  # delivery's
    held, held_seq = await harness.store(["e@a.test"], manual=True)
    state = await harness.js.key_value(STATE_BUCKET)
    await state.put(held.id, json.dumps({"id": held.id, "msg_seq": held_seq}).encode())
    await eventually(lambda: acked_by_delivery_first(harness, held_seq))
    sweeper = Leftovers(harness.nc, harness.js)  # type: ignore[arg-type]
    later = time.time() + 3600

    assert [await sweeper.sweep(later) for _ in range(3)] == [0, 0, 0]
    assert sweeper.handed_over == 0
    assert await still_stored(harness, held_seq)
    assert await harness.no_more_jobs(0.3)


async def acked_by_delivery_first(harness: QueueHarness, seq: int) -> bool:
    info = await harness.js.consumer_info(MESSAGES_STREAM, FIRST_CONSUMER)
    return info.ack_floor is not None and (info.ack_floor.stream_seq or 0) >= seq


async def test_a_message_counted_done_without_a_report_is_handed_to_the_queue(
    harness: QueueHarness,
) -> None:
    """A stored message whose first attempt the consumer counts acknowledged while
    nothing holds it (no state, no report, no ``done``) would wait forever: at its
    second sighting it goes to the queue, which plans its delivery."""
    await harness.start_queue()
    stray, seq = await harness.store(["b@a.test", "c@relayed.test"], manual=True)
    await eventually(lambda: acked_by_delivery_first(harness, seq))
    sweeper = Leftovers(harness.nc, harness.js)  # type: ignore[arg-type]
    later = time.time() + 3600

    assert await sweeper.sweep(later) == 0
    assert sweeper.handed_over == 0  # once could be a message being finished right now
    assert await harness.no_more_jobs(0.3)
    await sweeper.sweep(later)

    assert sweeper.handed_over == 1
    jobs = await harness.take_jobs(2)
    kept_seq, _ = await harness.kept(stray.id)  # the queue delivers it from its own copy
    assert {job.msg_seq for job, _ in jobs} == {kept_seq}
    assert sorted(r for job, _ in jobs for r in job.recipients) == ["b@a.test", "c@relayed.test"]
    assert await harness.state(stray.id) is not None
    # owned by the queue now: later sweeps leave it alone
    await sweeper.sweep(later)
    await sweeper.sweep(later)
    assert sweeper.handed_over == 1
    assert await harness.no_more_jobs(0.3)


async def test_a_message_still_to_be_offered_is_not_a_stray(harness: QueueHarness) -> None:
    """With every delivery process down the backlog waits for them, however old."""
    await harness.start_queue()
    await harness.pause_first_attempts()
    _, seq = await harness.store(["b@a.test"], manual=True)
    sweeper = Leftovers(harness.nc, harness.js)  # type: ignore[arg-type]
    later = time.time() + 3600

    for _ in range(3):
        await sweeper.sweep(later)

    assert sweeper.handed_over == 0
    assert not await acked_by_delivery_first(harness, seq)
    assert await harness.no_more_jobs(0.3)


async def test_a_stray_stored_after_its_deadline_is_withdrawn_not_delivered(
    harness: QueueHarness,
) -> None:
    """A copy stored after ingress stopped waiting (the client read 451) stays a 451."""
    await harness.start_queue()
    stray, seq = await harness.store(["b@a.test"], manual=True, deadline=time.time() - 60)
    await eventually(lambda: acked_by_delivery_first(harness, seq))
    sweeper = Leftovers(harness.nc, harness.js)  # type: ignore[arg-type]
    later = time.time() + 3600

    await sweeper.sweep(later)
    await sweeper.sweep(later)

    assert sweeper.handed_over == 1
    assert await eventually(lambda: _gone(harness, seq))
    assert await eventually(lambda: _withdrawn(harness, stray.id))
    assert await harness.no_more_jobs(0.3)


async def _gone(harness: QueueHarness, seq: int) -> bool:
    return not await still_stored(harness, seq)


async def _withdrawn(harness: QueueHarness, qid: str) -> bool:
    return "withdrawn" in await harness.event_types(qid)


async def test_a_stored_message_without_a_usable_envelope_is_left_for_an_operator(
    harness: QueueHarness, caplog: pytest.LogCaptureFixture
) -> None:
    """Delivery terminates such a message (counted acknowledged); the sweep names it
    once and does not hand it over, nor name it again at every sweep."""
    await harness.start_queue()
    await harness.pause_first_attempts()
    ack = await harness.js.publish(
        "elemta.msg.01BROKENENVELOPE0000", b"hi", headers={"Elemta-Envelope": "{not json"}
    )
    sub = await harness.js.pull_subscribe_bind(FIRST_CONSUMER, stream=MESSAGES_STREAM)
    (msg,) = await sub.fetch(1, timeout=5)
    await msg.term()  # as delivery does
    await eventually(lambda: acked_by_delivery_first(harness, ack.seq))
    sweeper = Leftovers(harness.nc, harness.js)  # type: ignore[arg-type]
    later = time.time() + 3600

    for _ in range(4):
        await sweeper.sweep(later)

    assert sweeper.handed_over == 0
    named = [r for r in caplog.records if "no usable envelope" in r.getMessage()]
    assert len(named) == 1
    assert await still_stored(harness, ack.seq)
