"""Ending a message delivered to everyone at its first attempt, without the queue.

Most mail is delivered at its first attempt, to every recipient; the queue would
only delete the stored message and write its history. Delivery does that itself,
which spares a report in ``ELEMTA_OUTCOMES``, its acknowledgement and the queue's
work on it: the history record goes out first
(:func:`elemta.common.history.delivered_at_once`, the same record the queue would
write) and is waited for, then the stored message is deleted (the durable end;
once it is gone it can never be offered again), then the caller acks the message.

What is durable when: a process killed before the history record is stored leaves
the message to be offered again (and attempted again, as for any attempt whose
end was not recorded); killed after it, the record is there, and the message,
still stored, is attempted again only if its redelivery lookup does not find it
ended; killed after the delete, the message is acked on its next offer (it is
gone). The record's ``Nats-Msg-Id`` names the stored message, so a repeated end
within the duplicate window is stored once.

The records of messages ending close together are published together
(:class:`HistoryBatch`): every synced store costs nats-server a disk flush, and a
few records arriving in one write are flushed together. A record waits at most
:data:`BATCH_DELAY` for others; the message is not acked before its record is
stored either way.

A message stays with the queue (:meth:`Finisher.applies` is false) when anything
is left to do after the attempt: a recipient not delivered, a body in the Object
Store to remove, a sender who asked for success notices (DSN ``NOTIFY=SUCCESS``).
When the delete is not confirmed, the report goes to the queue as before, which
deletes the message (a message already gone counts as deleted).
"""

from __future__ import annotations

import asyncio
import json
import logging

from nats.aio.client import Client as NATS

from elemta.common.envelope import FirstAttempt
from elemta.common.history import delivered_at_once
from elemta.common.jetstream import EVENTS_SUBJECT, MESSAGES_STREAM, delete_stream_msg
from elemta.common.puback import header_block, publish_acked
from elemta.common.replies import Status

__all__ = ["BATCH_DELAY", "BATCH_SIZE", "Finisher", "HistoryBatch"]

log = logging.getLogger(__name__)

BATCH_DELAY = 0.004  # seconds a history record waits for others to go with
BATCH_SIZE = 64  # records published at once at most


class HistoryBatch:
    """History records published in groups, each caller waiting for its own PubAck."""

    def __init__(self, nc: NATS, wait: float) -> None:
        self.nc = nc
        self.wait = wait
        self._pending: list[tuple[str, bytes, bytes, asyncio.Future[int]]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._sending: set[asyncio.Task[None]] = set()

    async def store(self, subject: str, data: bytes, msg_id: str) -> int:
        """Store one record on ``subject``; the stream sequence once stored."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[int] = loop.create_future()
        self._pending.append((subject, data, header_block({"Nats-Msg-Id": msg_id}), done))
        if len(self._pending) >= BATCH_SIZE:
            self._flush()
        elif self._timer is None:
            self._timer = loop.call_later(BATCH_DELAY, self._flush)
        return await done

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch, self._pending = self._pending, []
        if batch:
            task = asyncio.get_running_loop().create_task(self._send(batch))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _send(self, batch: list[tuple[str, bytes, bytes, asyncio.Future[int]]]) -> None:
        # Every publish is written before the first PubAck is awaited: one write.
        acks = await asyncio.gather(
            *(publish_acked(self.nc, subj, data, hdr, self.wait) for subj, data, hdr, _ in batch),
            return_exceptions=True,
        )
        for (_, _, _, done), ack in zip(batch, acks, strict=True):
            if done.done():
                continue
            if isinstance(ack, BaseException):
                done.set_exception(ack)
            else:
                done.set_result(ack)


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
        """Record the history and delete the stored message; False when the delete
        was not confirmed (the caller then reports to the queue)."""
        qid = report.envelope.id
        records = json.dumps(delivered_at_once(report), separators=(",", ":")).encode()
        try:  # as the queue's: history is not worth failing the message for
            await self.history.store(
                f"{EVENTS_SUBJECT}.{qid}", records, f"history.{qid}.{report.msg_seq}"
            )
        except Exception as exc:
            log.warning("%s: history not recorded: %r", qid, exc)
        try:
            await delete_stream_msg(self.nc, MESSAGES_STREAM, report.msg_seq, self.wait)
        except Exception as exc:
            log.warning("%s: stored message not deleted (%r); the queue will", qid, exc)
            return False
        return True
