"""The history record of a message delivered to everyone at its first attempt.

Per-message history lives on ``elemta.events.<id>`` (stream ``ELEMTA_EVENTS``):
each stored record is one event (a JSON object) or the events of one step (a JSON
array). A message whose first attempt delivered it to every recipient has one
record for its whole journey: ``accepted``, then per recipient ``attempt`` and
``delivered``, then ``done``. Whoever ends such a message (delivery, or the queue
for a report handed to it) writes exactly this, so the history reads the same.
"""

from __future__ import annotations

import json
import time
from typing import Any

from .envelope import FirstAttempt

__all__ = ["delivered_at_once", "says_done"]


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


def says_done(record: bytes) -> bool:
    """Whether a stored history record (one event or a step's array) holds ``done``:
    the message was finished, and its stored copy deleted, before it was written."""
    try:
        parsed = json.loads(record)
    except ValueError:
        return False
    events = parsed if isinstance(parsed, list) else [parsed]
    return any(isinstance(e, dict) and e.get("type") == "done" for e in events)
