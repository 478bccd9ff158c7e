"""The history record of a message delivered to everyone at its first attempt.

Per-message history lives on ``elemta.events.<id>`` (stream ``ELEMTA_EVENTS``):
each stored record is one event (a JSON object) or the events of one step (a JSON
array). A message whose first attempt delivered it to every recipient has one
list of events for its whole journey: ``accepted``, then per recipient
``attempt`` and ``delivered``, then ``done``. Whoever ends such a message
(delivery, or the queue for a report handed to it) writes exactly this, so the
history reads the same.

Delivery, which ends most mail, stores these lists of many messages together:
one record (a JSON object, queue id -> events) on ``elemta.events.at.<bucket>``,
where the bucket is the first :data:`BUCKET_CHARS` characters of the queue id,
that is its acceptance time to about a second
(:func:`elemta.common.envelope.new_queue_id`). Every stored record costs
nats-server a synced write, as much as the message itself; one record for a few
messages saves most of it. A reader finds a message's events by reading the
records of its bucket (:func:`batch_subject`, :func:`events_in_batch`): messages
accepted within the same second or so.
"""

from __future__ import annotations

import json
import time
from typing import Any

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from .envelope import FirstAttempt
from .evidence import own_end
from .names import EVENTS_STREAM, EVENTS_SUBJECT

__all__ = [
    "BATCH_SUBJECT",
    "EndedIndex",
    "BUCKET_CHARS",
    "batch_subject",
    "batched_events",
    "delivered_at_once",
    "ended",
    "events_in_batch",
    "holds_done",
]

BATCH_SUBJECT = f"{EVENTS_SUBJECT}.at"
BUCKET_CHARS = 8  # of a queue id: 40 bits of its 50-bit millisecond time, ~1 s
# Records of one bucket read at most for a message: a bucket spans about a second
# and holds a few dozen records at thousands of messages a second.
MAX_BATCH_RECORDS = 2000


def batch_subject(qid: str) -> str:
    """The subject of the records that hold ``qid``'s events when stored in a batch."""
    return f"{BATCH_SUBJECT}.{qid[:BUCKET_CHARS]}"


def events_in_batch(data: bytes | None, qid: str) -> list[Any] | None:
    """``qid``'s events in one batch record; None when it holds none (or is not one)."""
    try:
        record = json.loads(data or b"")
    except ValueError:
        return None
    found = record.get(qid) if isinstance(record, dict) else None
    return found if isinstance(found, list) else None


async def batched_events(
    js: JetStreamContext, qid: str, direct: bool = False, limit: int = MAX_BATCH_RECORDS
) -> list[Any] | None:
    """``qid``'s events from the first record of its bucket that holds them; None
    when none does (at most ``limit`` records read). ``direct``: read from any
    replica (a view), else from the stream leader (a decision). NATS errors other
    than "no more records" are the caller's."""
    subject = batch_subject(qid)
    seq = 1
    for _ in range(limit):
        try:
            msg = await js.get_msg(
                EVENTS_STREAM, seq=seq, subject=subject, next=True, direct=direct
            )
        except NotFoundError:
            return None
        found = events_in_batch(msg.data, qid)
        if found is not None:
            return found
        seq = (msg.seq or seq) + 1
    return None


def ended_in_batch(data: bytes | None) -> set[str]:
    """The queue ids whose events in one batch record hold ``done``."""
    try:
        record = json.loads(data or b"")
    except ValueError:
        return set()
    if not isinstance(record, dict):
        return set()
    return {q for q, events in record.items() if isinstance(events, list) and holds_done(events)}


class EndedIndex:
    """Which messages the batch records of their buckets say ended, for a process
    that asks about many messages of a few buckets (the queue's bulk removal,
    delivery's lookups after a reconnection): each bucket's records are read once,
    then only the ones stored since. The newest ``keep`` buckets are remembered
    (a bucket is about a second of acceptance time). ``direct``: read from any
    replica, else from the stream leader. NATS errors other than "no more
    records" are the caller's."""

    def __init__(self, js: JetStreamContext, direct: bool = False, keep: int = 16) -> None:
        self.js = js
        self.direct = direct
        self.keep = keep
        self._buckets: dict[str, tuple[int, set[str]]] = {}  # subject -> last seq, ended ids

    async def ended(self, qid: str) -> bool:
        subject = batch_subject(qid)
        last, ids = self._buckets.get(subject, (0, set()))
        if qid in ids:
            return True
        for _ in range(MAX_BATCH_RECORDS):
            try:
                msg = await self.js.get_msg(
                    EVENTS_STREAM, seq=last + 1, subject=subject, next=True, direct=self.direct
                )
            except NotFoundError:
                break
            ids |= ended_in_batch(msg.data)
            last = msg.seq or last + 1
        self._buckets[subject] = (last, ids)
        for old in sorted(self._buckets)[: -self.keep]:
            del self._buckets[old]
        return qid in ids


async def ended(js: JetStreamContext, qid: str) -> str:
    """How the history of ``qid`` says it ended: ``done`` (every recipient final),
    ``withdrawn`` (a copy stored after its deadline, never delivered), or '' (not
    ended, or no history yet). The queue writes either as the last record on the
    message's own subject; delivery writes ``done`` into its bucket's records.
    NATS errors other than "not found" are the caller's."""
    end = await own_end(js, qid)
    if end:
        return end
    batched = await batched_events(js, qid)
    return "done" if batched is not None and holds_done(batched) else ""


def delivered_at_once(report: FirstAttempt, now: float | None = None) -> list[dict[str, Any]]:
    """The events of a first attempt whose outcomes are all ``delivered``."""
    env = report.envelope
    at = round(time.time() if now is None else now, 6)

    def event(type_: str, **details: Any) -> dict[str, Any]:
        return {"type": type_, "at": at, "id": env.id, **details}

    records = [
        event(
            "accepted",
            sender=env.sender,
            recipients=list(env.recipients),
            size=env.size,
            dests={o.dest: [r.recipient for r in o.results] for o in report.outcomes},
        )
    ]
    delivered: set[str] = set()
    for o in report.outcomes:
        for r in o.results:
            records.append(
                event(
                    "attempt",
                    recipient=r.recipient,
                    dest=o.dest,
                    attempt=o.attempt,
                    host=o.host,
                    status=r.status,
                    code=r.code,
                    enhanced=r.enhanced,
                    text=r.text,
                )
            )
            records.append(event("delivered", recipient=r.recipient, host=o.host, code=r.code))
            delivered.add(r.recipient)
    records.append(event("done", delivered=len(delivered)))
    return records


def holds_done(events: list[Any]) -> bool:
    """Whether ``done`` is among ``events``."""
    return any(isinstance(e, dict) and e.get("type") == "done" for e in events)
