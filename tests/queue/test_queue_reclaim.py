"""First-attempt copies go in bulk once their first attempt is over, and never
before: a copy whose history does not say it ended, and that the queue does not
work from a copy of, stays, and so does everything after it while it is young."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator

import nats
import pytest
from nats.js import JetStreamContext
from queue_harness import make_config

from elemta.common.envelope import Envelope, new_queue_id
from elemta.common.history import batch_subject
from elemta.common.jetstream import (
    ENVELOPE_HEADER,
    MESSAGES_STREAM,
    STATE_BUCKET,
    ensure_streams,
)
from elemta.queue.reclaim import Reclaimer

from support.natsserver import NatsServer


class Store:
    def __init__(self, nc: nats.NATS) -> None:
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream(timeout=5)

    async def message(self, subject: str = "elemta.msg") -> tuple[str, int]:
        qid = new_queue_id()
        env = Envelope(id=qid, sender="a@b.test", recipients=["c@d.test"], received_at=time.time())
        ack = await self.js.publish(
            f"{subject}.{qid}",
            b"Subject: hi\r\n\r\nhi\r\n",
            headers={ENVELOPE_HEADER: env.to_header()},
        )
        return qid, ack.seq

    async def delivered_at_once(self, *qids: str) -> None:
        """The history record delivery writes for messages it ended (one per bucket)."""
        by_bucket: dict[str, dict[str, list[dict[str, object]]]] = {}
        for qid in qids:
            events = [{"type": t, "id": qid} for t in ("accepted", "delivered", "done")]
            by_bucket.setdefault(batch_subject(qid), {})[qid] = events
        for subject, record in by_bucket.items():
            await self.js.publish(subject, json.dumps(record).encode())

    async def ended_by_queue(self, qid: str, how: str = "done") -> None:
        await self.js.publish(f"elemta.events.{qid}", json.dumps({"type": how}).encode())

    async def stored(self) -> set[int]:
        info = await self.js.stream_info(MESSAGES_STREAM)
        out = set()
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            try:
                await self.js.get_msg(MESSAGES_STREAM, seq)
            except nats.js.errors.NotFoundError:
                continue
            out.add(seq)
        return out


@pytest.fixture
async def store(nats_server: NatsServer) -> AsyncIterator[Store]:
    nc = await nats.connect(nats_server.url)
    await ensure_streams(nc.jetstream(), make_config(nats_server.url))
    yield Store(nc)
    await nc.close()


def reclaimer(store: Store, now: float | None = None, **kw: float) -> Reclaimer:
    return Reclaimer(store.nc, store.js, clock=lambda: now or time.time(), **kw)  # type: ignore[arg-type]


async def test_copies_whose_first_attempt_ended_go_in_one_purge_up_to_the_first_that_did_not(
    store: Store,
) -> None:
    ended = [await store.message() for _ in range(5)]
    waiting, waiting_seq = await store.message()
    later, later_seq = await store.message()
    await store.delivered_at_once(*(q for q, _ in ended), later)

    assert await reclaimer(store).sweep() == 5
    assert await store.stored() == {waiting_seq, later_seq}  # held back by the one before

    await store.delivered_at_once(waiting)
    assert await reclaimer(store).sweep() == 2
    assert await store.stored() == set()


async def test_an_end_the_queue_recorded_counts_and_so_does_a_withdrawn_copy(store: Store) -> None:
    finished, _ = await store.message()
    withdrawn, _ = await store.message()
    await store.ended_by_queue(finished)
    await store.ended_by_queue(withdrawn, "withdrawn")

    assert await reclaimer(store).sweep() == 2
    assert await store.stored() == set()


async def test_a_message_the_queue_works_from_its_own_copy_of_is_over_and_the_copy_stays(
    store: Store,
) -> None:
    qid, first_seq = await store.message()
    _, kept_seq = await store.message(subject="elemta.kept")
    state = await store.js.key_value(STATE_BUCKET)
    await state.put(qid, json.dumps({"id": qid, "msg_seq": kept_seq}).encode())
    # a copy the queue holds at the first-attempt sequence (an earlier version's) stays
    old, old_seq = await store.message()
    await state.put(old, json.dumps({"id": old, "msg_seq": old_seq}).encode())

    assert await reclaimer(store).sweep() == 1
    assert await store.stored() == {kept_seq, old_seq}


async def test_nothing_goes_while_the_first_copy_is_owed_however_many_ended_after_it(
    store: Store,
) -> None:
    """A stray or a message not attempted yet has no end: it and everything after it
    stay while it is young."""
    owed, owed_seq = await store.message()
    after = [await store.message() for _ in range(3)]
    await store.delivered_at_once(*(q for q, _ in after))

    assert await reclaimer(store, stuck_after=60).sweep() == 0
    assert await store.stored() == {owed_seq, *(s for _, s in after)}


async def test_past_a_copy_owed_for_long_the_ended_ones_are_deleted_one_by_one(
    store: Store,
) -> None:
    """An attempt held up for minutes must not let the stream grow behind it."""
    owed, owed_seq = await store.message()
    after = [await store.message() for _ in range(3)]
    young, young_seq = await store.message()
    await store.delivered_at_once(*(q for q, _ in after))

    assert await reclaimer(store, now=time.time() + 120, stuck_after=60).sweep() == 3
    assert await store.stored() == {owed_seq, young_seq}


async def test_an_empty_stream_is_a_quiet_sweep(store: Store) -> None:
    assert await reclaimer(store).sweep() == 0
