"""Removing in bulk the stored messages whose first attempt is over.

Every accepted message is stored once on ``elemta.msg.<id>`` (or its class's
subject) for its first attempt. Most are delivered to everyone right there and
delivery records ``done`` in their history (:mod:`elemta.common.history`); the
rest the queue takes over, working from a copy on ``elemta.kept.<id>``
(:meth:`.Dispatcher.keep`). Either way the first-attempt copy is no longer
needed, and deleting it one message at a time cost nats-server a synced write
per message — as much as storing it. The active queue instead removes them many
at once: every ``interval`` it reads the stored messages from the oldest on
(headers only) and purges the first-attempt subjects up to the first message
whose first attempt is not over — one request, whatever the count.

A first-attempt copy is *over* when

* its history says ``done`` or ``withdrawn`` (in its bucket's records, where
  delivery writes it, or on its own subject, where the queue does), or
* the queue holds its state and works from another copy (the state's stream
  sequence is not this one).

Anything else stops the purge there: a message not attempted yet or under way, a
report on its way to the queue, a stray (:mod:`.leftovers` hands those over), the
state of a version that worked from the first-attempt copy. The evidence is
read, never assumed from consumer progress, so a consumer that skipped messages
(as a nats-server killed several times in a row was seen to do) cannot lose one.

A message that stops the purge for longer than ``stuck_after`` (an attempt held
up by a slow destination, a copy without a usable envelope kept for an
operator) would let the stream grow behind it, so past it the ended copies are
deleted one by one, as before, until it is over.

The pass runs four times a second: copies of ended messages are held in
nats-server's memory until purged, which at 100 KB messages and a few hundred a
second took its peak RSS from ~130 to ~170 MB with a pass a second.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing

from nats.aio.client import Client as NATS
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.errors import APIError

from elemta.common.evidence import own_end, queue_state
from elemta.common.history import EndedIndex
from elemta.common.jetstream import (
    API_PREFIX,
    MESSAGES_STREAM,
    PRIORITY_CLASSES,
    delete_stream_msg,
)
from elemta.common.names import class_prefix
from elemta.common.puback import request
from elemta.common.scan import scan
from elemta.common.tasks import cancel_and_wait

from .metrics import RECLAIMED

__all__ = ["Reclaimer"]

log = logging.getLogger(__name__)

_FETCH = 500  # messages per fetch while reading


def first_attempt_class(subject: str) -> str | None:
    """The priority class of a first-attempt copy from its subject, None for any
    other subject (a kept copy)."""
    for klass in PRIORITY_CLASSES:
        if subject.startswith(f"{class_prefix(klass)}msg."):
            return klass
    return None


class Reclaimer:
    """Purges first-attempt copies of ``ELEMTA_MESSAGES`` once their attempt is over."""

    def __init__(
        self,
        nc: NATS,
        js: JetStreamContext,
        interval: float = 0.25,
        batch: int = 5000,
        stuck_after: float = 60.0,
        wait: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.nc = nc
        self.js = js
        self.interval = interval
        self.batch = batch
        self.stuck_after = stuck_after
        self.wait = wait
        self.clock = clock
        self.removed = 0  # copies removed by this process
        self._ends = EndedIndex(js)
        self._task: asyncio.Task[None] | None = None

    async def sweep(self) -> int:
        """One pass from the oldest stored message; returns how many copies went."""
        info = await self.js.stream_info(MESSAGES_STREAM)
        if not info.state.messages:
            return 0
        now = self.clock()
        upto = 0  # purge the first-attempt copies below this sequence
        classes: set[str] = set()
        stuck = False
        singles: list[int] = []
        async with aclosing(self._read(int(info.state.first_seq or 1))) as heads:
            async for seq, subject, stored_at in heads:
                klass = first_attempt_class(subject)
                if klass is None:
                    continue  # a kept copy: the queue deletes it when the message ends
                over = await self._over(subject.rsplit(".", 1)[-1], seq)
                if stuck:
                    if over:
                        singles.append(seq)
                    continue
                if over:
                    upto = seq + 1
                    classes.add(klass)
                    continue
                if now - stored_at < self.stuck_after:
                    break
                stuck = True
                log.info(
                    "stored message (seq %d) not over after %.0fs; removing the ended ones "
                    "after it one by one",
                    seq,
                    now - stored_at,
                )
        removed = 0
        for klass in sorted(classes):
            removed += await self._purge(f"{class_prefix(klass)}msg.>", upto)
        for seq in singles:
            await delete_stream_msg(self.nc, MESSAGES_STREAM, seq, self.wait)
            removed += 1
        self.removed += removed
        RECLAIMED.inc(removed)
        return removed

    async def _purge(self, subjects: str, upto: int) -> int:
        """Purge ``subjects`` below sequence ``upto``; how many messages went."""
        resp = await request(
            self.nc,
            f"{API_PREFIX}.STREAM.PURGE.{MESSAGES_STREAM}",
            json.dumps({"filter": subjects, "seq": upto}).encode(),
            None,
            self.wait,
        )
        reply = json.loads(resp.data or b"{}")
        if reply.get("error"):
            raise APIError(**reply["error"])
        return int(reply.get("purged") or 0)

    async def _read(self, first: int) -> AsyncGenerator[tuple[int, str, float], None]:
        """Sequence, subject and storage time of up to ``batch`` stored messages from
        ``first`` on, in order, fetched as the caller goes (headers only: the bodies
        are not needed)."""
        messages = scan(
            self.js,
            MESSAGES_STREAM,
            ">",
            start_seq=first,
            headers_only=True,
            limit=self.batch,
            wait=self.wait,
        )
        async with aclosing(messages):
            async for msg in messages:
                meta = msg.metadata
                stored = meta.timestamp.timestamp() if meta.timestamp else self.clock()
                yield meta.sequence.stream, msg.subject, stored

    async def _over(self, qid: str, seq: int) -> bool:
        """Whether the first attempt of the copy of ``qid`` at ``seq`` is over."""
        if await self._ends.ended(qid):
            return True
        if await own_end(self.js, qid):
            return True
        state = await queue_state(self.js, qid)
        kept = state.get("msg_seq") if state is not None else None
        return isinstance(kept, int) and kept != seq

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.sweep()
            except (TimeoutError, NatsError) as exc:
                log.debug("reclaim not done: %r", exc)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="queue-reclaim")

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None
