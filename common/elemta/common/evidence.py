"""What JetStream holds about one message, read from the stream leader: the reads
that decide whether a stored message still needs its first attempt.

Three readers make that decision — delivery before a second attempt
(``elemta.delivery.redelivery``), the queue's sweep for strays and its bulk
removal of first-attempt copies — and each must read the same records the same
way: the queue's state, a report waiting for the queue, the end recorded on the
message's own history subject. Reads go to the stream leader (no direct get):
these are decisions, not views. NATS errors other than "not there" are the
caller's.
"""

from __future__ import annotations

import json
from typing import Any

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from .names import EVENTS_STREAM, EVENTS_SUBJECT, OUTCOME_SUBJECT, OUTCOMES_STREAM, STATE_BUCKET

__all__ = ["own_end", "queue_state", "report_waiting"]

_KV_GONE = ("DEL", "PURGE")


async def queue_state(js: JetStreamContext, qid: str) -> dict[str, Any] | None:
    """The queue's state record of ``qid`` in KV ``ELEMTA_STATE``; None when there is
    none (never written, or removed when the message ended). A record that cannot be
    read counts as held: the queue has it, whatever it says."""
    try:
        raw = await js.get_msg(f"KV_{STATE_BUCKET}", subject=f"$KV.{STATE_BUCKET}.{qid}")
    except NotFoundError:
        return None
    if (raw.headers or {}).get("KV-Operation") in _KV_GONE:
        return None
    try:
        record = json.loads(raw.data or b"")
    except ValueError:
        return {}
    return record if isinstance(record, dict) else {}


async def report_waiting(js: JetStreamContext, qid: str) -> bool:
    """Whether ``elemta.outcome.<id>`` holds a record the queue has not taken yet."""
    try:
        await js.get_msg(OUTCOMES_STREAM, subject=f"{OUTCOME_SUBJECT}.{qid}")
    except NotFoundError:
        return False
    return True


def end_in_record(data: bytes | None) -> str:
    """``done`` or ``withdrawn`` when one history record (an event or a step's list
    of events) ends the message, else ''."""
    try:
        parsed = json.loads(data or b"")
    except ValueError:
        return ""
    events = parsed if isinstance(parsed, list) else [parsed]
    types = {e.get("type") for e in events if isinstance(e, dict)}
    for end in ("withdrawn", "done"):
        if end in types:
            return end
    return ""


async def own_end(js: JetStreamContext, qid: str) -> str:
    """How the last record on ``elemta.events.<id>`` says the message ended (the
    queue writes ``done`` or ``withdrawn`` there), or ''."""
    try:
        last = await js.get_msg(EVENTS_STREAM, subject=f"{EVENTS_SUBJECT}.{qid}")
    except NotFoundError:
        return ""
    return end_in_record(last.data)
