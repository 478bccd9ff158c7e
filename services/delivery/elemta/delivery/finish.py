"""Ending a message delivered to everyone at its first attempt, without the queue.

Most mail is delivered at its first attempt, to every recipient; the queue would
only write its history. Delivery does that itself, which spares a report in
``ELEMTA_OUTCOMES``, its acknowledgement and the queue's work on it: the history
record goes out (:func:`elemta.common.history.delivered_at_once`, the same events
the queue would write) and is waited for, then the caller acks the message. The
record's ``done`` is the durable end: the queue's reclaimer
(``elemta.queue.reclaim``) removes the stored copies of ended messages in bulk,
many at once, since a delete per message cost nats-server a synced write.

What is durable when: a process killed before the history record is stored leaves
the message to be offered again (and attempted again, as for any attempt whose
end was not recorded); killed after it and before the ack, the message is
offered again and its lookup finds the record (:mod:`.redelivery`): it is acked,
not delivered again (should it be attempted anyway, its events are in two
records, and readers take the first). History is never lost with a message that
was ended.

A record that gets no PubAck (a node of the cluster gone, its stream electing a
leader, "no responders" for a moment after a reconnection) is sent again for up
to :data:`HISTORY_PATIENCE` seconds, each send waiting at most
:data:`HISTORY_TRY_WAIT` for its PubAck: a message whose end is not recorded is
attempted again when it comes back, so giving up at the first refusal turned
every node restart into a few duplicates. Its messages do not wait that long: a
record not stored within :data:`HISTORY_LATE` seconds releases them
(:class:`RecordLate`) and their reports go to the queue, through another stream
(whose leader may well be alive), while the record is still being sent. A
stream electing a leader takes seconds, and a delivery process killed before
either lands sends every message of that wait again. Until a record is stored
again, the messages of the next records do not wait at all: their reports go
to the queue at once (their records are still sent). Should both land, the
message is ended twice, which is harmless. Sent again, a record may be stored
twice; readers take the first.

The events of messages ending close together are stored together
(:class:`HistoryBatch`): one record per bucket of acceptance time
(:mod:`elemta.common.history`), since every synced store costs nats-server about
as much as the message itself. A process writes at most one round of records per
:data:`BATCH_DELAY`: the first message to end after a quiet spell goes at once,
those ending within the delay after a round wait for the next one. Under load that
is the same batching as a fixed delay; when mail is sparse nothing waits, which
matters beyond latency: a delivery process killed between the destination's
``250`` and its stored record delivers that message again, so the shorter that
window, the fewer copies a crash makes. The message is not acked before its
record is stored either way.

A message stays with the queue (:meth:`Finisher.applies` is false) when anything
is left to do after the attempt: a recipient not delivered, a body in the Object
Store to remove, a sender who asked for success notices (DSN ``NOTIFY=SUCCESS``).
When the record cannot be stored, the report goes to the queue instead, which ends
the message itself.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from nats.aio.client import Client as NATS
from nats.errors import MaxPayloadError
from nats.js.errors import APIError

from elemta.common.envelope import FirstAttempt
from elemta.common.history import batch_subject, delivered_at_once
from elemta.common.patience import Patience
from elemta.common.puback import publish_acked
from elemta.common.replies import Status

__all__ = ["BATCH_DELAY", "BATCH_SIZE", "Finisher", "HistoryBatch", "RecordLate"]

log = logging.getLogger(__name__)

BATCH_DELAY = 0.010  # seconds between two rounds of history records, at least
BATCH_SIZE = 64  # messages in one record at most
BATCH_BYTES = 256 * 1024  # and about this many bytes of events
HISTORY_PATIENCE = 10.0  # seconds a record without a PubAck is sent again
# seconds one send of a record waits for its PubAck: a send lost with a dying
# connection is only noticed by its timeout, and the kill that took the server
# may take this process next; a few ms normally, a second is ample
HISTORY_TRY_WAIT = 1.0
# seconds the messages of a record wait for it before their reports go to the queue
HISTORY_LATE = 1.5


class RecordLate(Exception):
    """The history record was not stored in time; it is still being sent."""


class _Bucket:
    """The messages of one bucket waiting to be stored in one record."""

    __slots__ = ("done", "parts", "released", "size")

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.done: list[asyncio.Future[int]] = []
        self.size = 0
        self.released = False  # its messages stopped waiting (RecordLate)


class HistoryBatch:
    """History of messages ended close together stored as one record per bucket
    (:func:`elemta.common.history.batch_subject`); each caller waits for the PubAck
    of the record that holds its message."""

    def __init__(
        self,
        nc: NATS,
        wait: float,
        patience: float = HISTORY_PATIENCE,
        delay: float = BATCH_DELAY,
        late_after: float = HISTORY_LATE,
    ) -> None:
        self.nc = nc
        self.wait = wait
        self.patience = patience
        self.delay = delay
        self.late_after = late_after
        self._pending: dict[str, _Bucket] = {}
        self._count = 0
        self._timer: asyncio.TimerHandle | None = None
        self._last_round = float("-inf")  # loop time of the last round of records
        self._sending: set[asyncio.Task[None]] = set()
        # a record was late and none has been stored since: the stream is away (a
        # leader election takes seconds), so messages go to the queue at once
        self.late = False

    async def store(self, qid: str, events: list[dict[str, Any]]) -> int:
        """Store ``qid``'s events; the stream sequence of their record once stored."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[int] = loop.create_future()
        part = json.dumps(qid).encode() + b":" + json.dumps(events, separators=(",", ":")).encode()
        subject = batch_subject(qid)
        bucket = self._pending.get(subject)
        if bucket is not None and bucket.size + len(part) > BATCH_BYTES:
            # what is waiting goes first: a record too large for the server (a
            # message with thousands of recipients) then fails alone
            self._flush()
            bucket = None
        if bucket is None:
            bucket = self._pending[subject] = _Bucket()
        bucket.parts.append(part)
        bucket.done.append(done)
        bucket.size += len(part)
        self._count += 1
        if self._count >= BATCH_SIZE or bucket.size >= BATCH_BYTES:
            self._flush()
        elif self._timer is None:
            due = self._last_round + self.delay - loop.time()
            if due <= 0:  # the first after a quiet spell: nothing to wait for
                self._flush()
            else:
                self._timer = loop.call_later(due, self._flush)
        return await done

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        pending, self._pending, self._count = self._pending, {}, 0
        self._last_round = asyncio.get_running_loop().time()
        loop = asyncio.get_running_loop()
        for subject, bucket in pending.items():
            task = loop.create_task(self._send(subject, bucket))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _send(self, subject: str, bucket: _Bucket) -> None:
        record = b"{" + b",".join(bucket.parts) + b"}"
        wait = min(self.wait, HISTORY_TRY_WAIT)
        patience = Patience(self.patience)
        loop = asyncio.get_running_loop()
        late = loop.call_later(0 if self.late else self.late_after, self._release, bucket)
        try:
            while True:
                try:
                    seq = await publish_acked(self.nc, subject, record, None, wait)
                    break
                except Exception as exc:
                    refused = isinstance(exc, MaxPayloadError | APIError)  # never stored as is
                    if not refused:
                        log.info("history record not stored yet (%r); sending it again", exc)
                    if refused or not await patience.pause():
                        if bucket.released:  # its messages went to the queue
                            log.warning("history record given up (%r)", exc)
                        _settle(bucket, exc)
                        return
        finally:
            late.cancel()
        if bucket.released:
            log.info("history record stored after its messages went to the queue")
        if self.late:
            log.warning("history records are stored again")
            self.late = False
        _settle(bucket, seq)

    def _release(self, bucket: _Bucket) -> None:
        """Stop the messages of ``bucket`` waiting for their record, and those of
        the next records until one is stored."""
        bucket.released = True
        if not self.late:
            log.warning(
                "history record not stored after %.1fs; messages go to the queue until "
                "one is stored",
                self.late_after,
            )
            self.late = True
        _settle(bucket, RecordLate("history record not stored in time; still being sent"))


def _settle(bucket: _Bucket, result: int | BaseException) -> None:
    """Tell the messages of ``bucket`` still waiting how their record went."""
    for done in bucket.done:
        if done.done():
            continue
        if isinstance(result, BaseException):
            done.set_exception(result)
        else:
            done.set_result(result)


class Finisher:
    def __init__(self, nc: NATS, wait: float) -> None:
        self.nc = nc
        self.wait = wait
        self.history = HistoryBatch(nc, wait)

    @staticmethod
    def applies(report: FirstAttempt) -> bool:
        """Whether the attempt left nothing for the queue to do."""
        env = report.envelope
        return (
            bool(report.outcomes)
            and not report.dropped
            and not env.body_object
            and not any("SUCCESS" in notify.upper() for notify in env.dsn_notify.values())
            and all(r.status == Status.DELIVERED for o in report.outcomes for r in o.results)
        )

    async def __call__(self, report: FirstAttempt) -> bool:
        """Record the history; False when it could not be stored (the caller then
        reports to the queue, which ends the message and records it)."""
        qid = report.envelope.id
        try:
            await self.history.store(qid, delivered_at_once(report))
        except Exception as exc:
            log.warning("%s: history not recorded (%r); the queue will end it", qid, exc)
            return False
        return True
