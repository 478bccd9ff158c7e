"""A finished message whose stored copy is still in ELEMTA_MESSAGES (its history
says ``done``) is deleted by the active queue; mail still owed is never touched."""

from __future__ import annotations

import json
import time

from queue_harness import QueueHarness

from elemta.common.history import batch_subject
from elemta.common.jetstream import MESSAGES_STREAM, STATE_BUCKET
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


async def test_a_stored_copy_of_a_finished_message_is_deleted_and_nothing_else(
    harness: QueueHarness,
) -> None:
    await harness.start_queue()
    finished, finished_seq = await harness.store(["b@a.test"], manual=True)
    await history(harness, finished.id, "accepted", "attempt", "delivered", "done")
    waiting, waiting_seq = await harness.store(["c@a.test"], manual=True)  # no history yet
    tried, tried_seq = await harness.store(["d@a.test"], manual=True)
    await history(harness, tried.id, "accepted", "attempt", "deferred")
    ended, ended_seq = await harness.store(["f@a.test"], manual=True)
    records = {
        ended.id: [{"type": t, "at": time.time(), "id": ended.id} for t in ("accepted", "done")]
    }
    await harness.js.publish(batch_subject(ended.id), json.dumps(records).encode())  # delivery's
    held, held_seq = await harness.store(["e@a.test"], manual=True)
    await history(harness, held.id, "done")
    state = await harness.js.key_value(STATE_BUCKET)
    await state.put(held.id, b"{}")  # the queue holds it: not ours to judge
    sweeper = Leftovers(harness.nc, harness.js, clock=lambda: time.time() + 3600)  # type: ignore[arg-type]

    assert await sweeper.sweep(time.time() + 3600) == 2

    assert not await still_stored(harness, finished_seq)
    assert not await still_stored(harness, ended_seq)
    for seq in (waiting_seq, tried_seq, held_seq):
        assert await still_stored(harness, seq)
    # the next sweep starts from the oldest again and finds nothing more
    assert await sweeper.sweep(time.time() + 3600) == 0
    assert await sweeper.sweep(time.time() + 3600) == 0


async def test_young_copies_are_not_looked_at(harness: QueueHarness) -> None:
    """A message just finished may still be on its way out: only copies older than
    ``min_age`` are judged."""
    await harness.start_queue()
    finished, seq = await harness.store(["b@a.test"], manual=True)
    await history(harness, finished.id, "done")
    sweeper = Leftovers(harness.nc, harness.js, min_age=120.0)  # type: ignore[arg-type]

    assert await sweeper.sweep(time.time()) == 0
    assert await still_stored(harness, seq)
    assert await sweeper.sweep(time.time() + 121) == 1
    assert not await still_stored(harness, seq)


async def test_a_sweep_looks_at_a_batch_and_goes_on_where_it_stopped(
    harness: QueueHarness,
) -> None:
    await harness.start_queue()
    seqs = []
    for n in range(5):
        env, seq = await harness.store([f"r{n}@a.test"], manual=True)
        await history(harness, env.id, "done")
        seqs.append(seq)
    sweeper = Leftovers(harness.nc, harness.js, batch=2)  # type: ignore[arg-type]
    later = time.time() + 3600

    assert [await sweeper.sweep(later) for _ in range(3)] == [2, 2, 1]
    assert not any([await still_stored(harness, s) for s in seqs])
