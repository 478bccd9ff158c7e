"""Finished messages whose stored copy is still in ``ELEMTA_MESSAGES``: deleted.

``done`` in a message's history means every recipient is final: delivery stores
that record for mail it delivered at once right before it deletes the stored
copy, the queue writes it after its delete. A copy left behind all the same (a
process killed between record and delete, a delete that did not hold, a second
copy of the same message) is offered to no one once ``delivery-first`` acked it:
it would stay in the stream for good, count in the queue's depth and age, and
keep the queue from ever looking empty. The active queue therefore looks at the
stored messages older than ``min_age``, a few each ``interval`` from the oldest
on, and deletes a copy when all of these hold:

* no state in ``ELEMTA_STATE`` (the queue does not hold it),
* no report on ``elemta.outcome.<id>`` (the queue is not about to take it),
* the last record of its history says ``done``.

Mail waiting for its first attempt or for a retry fails the first two or the
last, and is never touched: a copy is deleted only when its history says the
message was finished, so this may spare a stream a copy, never lose a message.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from nats.aio.client import Client as NATS
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from elemta.common.history import batched_events, holds_done, says_done
from elemta.common.jetstream import (
    EVENTS_STREAM,
    EVENTS_SUBJECT,
    MESSAGES_STREAM,
    OUTCOME_SUBJECT,
    OUTCOMES_STREAM,
    STATE_BUCKET,
    delete_stream_msg,
)
from elemta.common.tasks import cancel_and_wait

__all__ = ["Leftovers"]

log = logging.getLogger(__name__)

_KV_GONE = ("DEL", "PURGE")


class Leftovers:
    """Sweeps ``ELEMTA_MESSAGES`` for copies of finished messages, ``batch`` at a time."""

    def __init__(
        self,
        nc: NATS,
        js: JetStreamContext,
        interval: float = 15.0,
        min_age: float = 120.0,
        batch: int = 32,
        wait: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.clock = clock
        self.nc = nc
        self.js = js
        self.interval = interval
        self.min_age = min_age
        self.batch = batch
        self.wait = wait
        self.deleted = 0  # leftovers deleted by this process
        self._cursor = 0  # the next stream sequence to look at
        self._task: asyncio.Task[None] | None = None

    async def sweep(self, now: float) -> int:
        """Look at up to ``batch`` stored messages older than ``min_age``, from where
        the last sweep stopped; start again at the oldest after the last of them.
        Returns how many copies were deleted."""
        deleted = 0
        for _ in range(self.batch):
            try:
                raw = await self.js.get_msg(
                    MESSAGES_STREAM, seq=max(1, self._cursor), next=True, subject="elemta.>"
                )
            except NotFoundError:
                self._cursor = 0  # past the last one: from the oldest next time
                break
            seq = int(raw.seq or 0)
            stored_at = raw.time.timestamp() if raw.time else now
            if now - stored_at < self.min_age:
                self._cursor = 0  # the rest is younger still
                break
            self._cursor = seq + 1
            qid = (raw.subject or "").rsplit(".", 1)[-1]
            if qid and await self._finished(qid):
                await delete_stream_msg(self.nc, MESSAGES_STREAM, seq, self.wait)
                log.warning(
                    "%s: finished, but its stored copy (seq %d) was still there; deleted",
                    qid,
                    seq,
                    extra={"queue_id": qid},
                )
                deleted += 1
        self.deleted += deleted
        return deleted

    async def _finished(self, qid: str) -> bool:
        try:
            state = await self.js.get_msg(f"KV_{STATE_BUCKET}", subject=f"$KV.{STATE_BUCKET}.{qid}")
            if (state.headers or {}).get("KV-Operation") not in _KV_GONE:
                return False
        except NotFoundError:
            pass
        try:
            await self.js.get_msg(OUTCOMES_STREAM, subject=f"{OUTCOME_SUBJECT}.{qid}")
            return False
        except NotFoundError:
            pass
        try:
            history = await self.js.get_msg(EVENTS_STREAM, subject=f"{EVENTS_SUBJECT}.{qid}")
            if says_done(history.data or b""):
                return True
        except NotFoundError:
            pass
        # delivery stores the history of what it ends several to a record
        events = await batched_events(self.js, qid)
        return events is not None and holds_done(events)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.sweep(self.clock())
            except (TimeoutError, NatsError) as exc:
                log.debug("leftover sweep not done: %s", exc)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="queue-leftovers")

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None
