"""Stored messages no one will finish: strays handed to the queue.

The stream is the truth of what is owed; consumer progress is only a cursor over
it. This sweep makes sure every stored message is either finished or owned. (The
copies of finished messages are the bulk removal's, :mod:`.reclaim`.) The active
queue looks at the stored messages older than ``min_age``, a few each
``interval``, from the oldest on.

**Strays.** A first-attempt copy with no state in ``ELEMTA_STATE`` (the queue
does not hold it), no report on ``elemta.outcome.<id>`` (the queue is not about
to take it) and no ``done`` or ``withdrawn`` in its history, while its first-attempt consumer (``delivery-first`` or its class's)
counts it acknowledged — at or below the consumer's ack floor, so pending with no
one and never offered again — is owed and owned by nobody. Delivery always stores
a report, a ``done`` or the queue's state before it acks, so this can only come
from a consumer that lost or skipped progress: a nats-server killed with SIGKILL
several times in a few seconds was seen to leave its consumer's ack floor past
eight messages it had stored just before the first kill, which no process ever
received. Such a message is handed to the queue as delivery hands over a held
one: a first-attempt report without outcomes (``Nats-Msg-Id:
first.<id>.<seq>``, so a report stored meanwhile is not doubled), from which
the queue plans its jobs; one stored after the deadline ingress gave it (the
client read ``451``) is reported ``dropped`` instead. A stray is handed over only
when a later sweep finds it stray again, so a message the queue is finishing
while it is looked at (its state removed before its ``done`` is written) is not
taken for one. Each hand-over is logged at WARNING and counted in
``elemta_queue_strays_total``.
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

from elemta.common.envelope import Envelope, FirstAttempt
from elemta.common.evidence import queue_state, report_waiting
from elemta.common.history import ended
from elemta.common.jetstream import (
    ENVELOPE_HEADER,
    MESSAGES_STREAM,
    OUTCOME_SUBJECT,
    PRIORITY_CLASSES,
)
from elemta.common.names import first_consumer
from elemta.common.tasks import cancel_and_wait

from .metrics import STRAYS
from .reclaim import first_attempt_class

__all__ = ["Leftovers"]

log = logging.getLogger(__name__)

_MAX_SUSPECTS = 4096  # strays remembered between sweeps; beyond, the oldest go
_TRACE_HEADERS = ("traceparent", "tracestate")

# What a look at one stored message finds.
FINISHED = "finished"  # its history says done: a leftover
OWNED = "owned"  # the queue holds it or is about to take its report
UNCLAIMED = "unclaimed"  # none of these: owed, and up to its consumer


class Leftovers:
    """Sweeps ``ELEMTA_MESSAGES`` for strays, ``batch`` at a time."""

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
        self.handed_over = 0  # strays handed to the queue by this process
        self._cursor = 0  # the next stream sequence to look at
        self._sweeps = 0  # sweeps so far, to tell a stray seen in an earlier one
        self._suspects: dict[int, int] = {}  # stream seq of a stray -> sweep that saw it
        self._unusable: set[int] = set()  # strays without a usable envelope: said once
        self._task: asyncio.Task[None] | None = None

    async def sweep(self, now: float) -> int:
        """Look at up to ``batch`` stored messages older than ``min_age``, from where
        the last sweep stopped; start again at the oldest after the last of them.
        Returns how many strays were handed over (in all: ``handed_over``)."""
        self._sweeps += 1
        floors: dict[str, int] | None = None  # read once per sweep, when first needed
        before = self.handed_over
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
            subject = raw.subject or ""
            qid = subject.rsplit(".", 1)[-1]
            if not qid:
                continue
            if not first_attempt_class(subject):
                continue  # a copy the queue keeps: owned
            if await self._judge(qid) != UNCLAIMED:  # finished (the bulk removal's) or owned
                self._suspects.pop(seq, None)
                continue
            if floors is None:
                floors = await self._ack_floors()
            if seq > floors.get(first_attempt_class(subject) or "", 0) or seq in self._unusable:
                continue  # its first attempt is still to come (or under way)
            if self._suspects.get(seq, self._sweeps) < self._sweeps:
                del self._suspects[seq]
                await self._hand_over(raw.headers or {}, qid, seq, stored_at)
            else:
                self._suspects[seq] = self._sweeps
        if len(self._suspects) > _MAX_SUSPECTS:
            for seq in sorted(self._suspects)[: len(self._suspects) - _MAX_SUSPECTS]:
                del self._suspects[seq]
        return self.handed_over - before

    async def _ack_floors(self) -> dict[str, int]:
        """Per priority class, the last stream sequence its first-attempt consumer
        counts as acknowledged with everything before it (a missing consumer: 0)."""
        floors: dict[str, int] = {}
        for klass in PRIORITY_CLASSES:
            try:
                info = await self.js.consumer_info(MESSAGES_STREAM, first_consumer(klass))
            except NotFoundError:
                continue
            floors[klass] = int(info.ack_floor.stream_seq or 0) if info.ack_floor else 0
        return floors

    async def _hand_over(
        self, headers: dict[str, str], qid: str, seq: int, stored_at: float
    ) -> None:
        """Give a stray to the queue: a first-attempt report without outcomes."""
        try:
            env = Envelope.from_header(headers[ENVELOPE_HEADER])
        except Exception as exc:  # not ours to guess at, as delivery does
            # delivery terms such a message (left for an operator); said once here
            log.error("%s: stray (seq %d) has no usable envelope: %s", qid, seq, exc)
            if len(self._unusable) < _MAX_SUSPECTS:
                self._unusable.add(seq)
            return
        report = FirstAttempt(envelope=env, msg_seq=seq)
        if env.deadline and stored_at > env.deadline:
            report.dropped = (
                f"stored {stored_at - env.deadline:.3f}s after its deadline; "
                "the client was told 451"
            )
        out = {"Nats-Msg-Id": f"first.{qid}.{seq}"}
        out.update({k: headers[k] for k in _TRACE_HEADERS if k in headers})
        await self.js.publish(
            f"{OUTCOME_SUBJECT}.{qid}", report.encode(), timeout=self.wait, headers=out
        )
        self.handed_over += 1
        STRAYS.inc()
        log.warning(
            "%s: stored (seq %d) and owed, but its first attempt counted done with no "
            "report; handed to the queue",
            qid,
            seq,
            extra={"queue_id": qid},
        )

    async def _judge(self, qid: str) -> str:
        """:data:`FINISHED`, :data:`OWNED` or :data:`UNCLAIMED` (see the module)."""
        if await queue_state(self.js, qid) is not None or await report_waiting(self.js, qid):
            return OWNED
        # done, or withdrawn (a copy stored after its deadline): either way ended
        return FINISHED if await ended(self.js, qid) else UNCLAIMED

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
