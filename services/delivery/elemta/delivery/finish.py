"""Ending a message delivered to everyone at its first attempt, without the queue.

Most mail is delivered at its first attempt, to every recipient; the queue would
only delete the stored message and write its history. Delivery does that itself,
which spares a report in ``ELEMTA_OUTCOMES``, its acknowledgement and the queue's
work on it: the stored message is deleted (the durable end; once it is gone it
can never be offered again), then the history record goes out
(:func:`elemta.common.history.delivered_at_once`, the same record the queue would
write), then the caller acks the message.

A message stays with the queue (:meth:`Finisher.applies` is false) when anything
is left to do after the attempt: a recipient not delivered, a body in the Object
Store to remove, a sender who asked for success notices (DSN ``NOTIFY=SUCCESS``).
When the delete is not confirmed, the report goes to the queue as before, which
deletes the message (a message already gone counts as deleted).
"""

from __future__ import annotations

import json
import logging

from nats.aio.client import Client as NATS

from elemta.common.envelope import FirstAttempt
from elemta.common.history import delivered_at_once
from elemta.common.jetstream import EVENTS_SUBJECT, MESSAGES_STREAM, delete_stream_msg
from elemta.common.replies import Status

__all__ = ["Finisher"]

log = logging.getLogger(__name__)


class Finisher:
    def __init__(self, nc: NATS, wait: float) -> None:
        self.nc = nc
        self.wait = wait

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
        """Delete the stored message and record its history; False when the delete
        was not confirmed (the caller then reports to the queue)."""
        qid = report.envelope.id
        try:
            await delete_stream_msg(self.nc, MESSAGES_STREAM, report.msg_seq, self.wait)
        except Exception as exc:
            log.warning("%s: stored message not deleted (%r); the queue will", qid, exc)
            return False
        records = delivered_at_once(report)
        try:  # as the queue's: history is not worth failing the message for
            await self.nc.publish(
                f"{EVENTS_SUBJECT}.{qid}", json.dumps(records, separators=(",", ":")).encode()
            )
        except Exception as exc:
            log.warning("%s: history not recorded: %r", qid, exc)
        return True
