"""Messages as an administrator sees them: one summary per state record, the filters
of a search, and the qshape-like table by destination and age.

Pure functions over the records :mod:`.view` reads, so the same selection serves
the list, the bulk actions and the summary.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["AGE_BUCKETS", "Filter", "message_state", "qshape", "summarize"]

# qshape's buckets: minutes, each the upper bound (the last is open-ended).
AGE_BUCKETS = (5, 10, 20, 40, 80, 160, 320, 640, 1280)
STATES = ("active", "deferred", "held", "failed")


def _domain(address: str) -> str:
    return address.rpartition("@")[2].lower()


def message_state(record: dict[str, Any]) -> str:
    """``held``, ``failed``, ``deferred`` (a destination waits for a retry) or ``active``."""
    status = record.get("status")
    if status == "hold":
        return "held"
    if status == "failed":
        return "failed"
    dests = record.get("dests") or {}
    if any(isinstance(d, dict) and d.get("status") == "deferred" for d in dests.values()):
        return "deferred"
    return "active"


def _last_error(record: dict[str, Any]) -> dict[str, Any] | None:
    best = None
    for d in (record.get("dests") or {}).values():
        last = d.get("last") if isinstance(d, dict) else None
        if last and (best is None or float(last.get("at") or 0) > float(best.get("at") or 0)):
            best = last
    return best


def summarize(record: dict[str, Any], now: float) -> dict[str, Any]:
    """The summary of one message: what ``elemta queue list`` shows per line."""
    dests = {k: d for k, d in (record.get("dests") or {}).items() if isinstance(d, dict)}
    pending = [
        r for d in dests.values() if d.get("status") != "done" for r in d.get("recipients") or []
    ]
    if not dests:
        pending = [
            r for r in record.get("recipients") or [] if r not in (record.get("final") or {})
        ]
    received = float(record.get("received_at") or 0)
    return {
        "id": str(record.get("id")),
        "state": message_state(record),
        "sender": str(record.get("sender") or ""),
        "recipients": [str(r) for r in record.get("recipients") or []],
        "pending": [str(r) for r in pending],
        "size": int(record.get("size") or 0),
        "received_at": received,
        "age": max(0.0, now - received) if received else 0.0,
        "destinations": sorted({str(d.get("domain") or k) for k, d in dests.items()}),
        "next_attempt": min(
            (
                float(d.get("next_attempt") or 0)
                for d in dests.values()
                if d.get("status") == "deferred"
            ),
            default=0.0,
        ),
        "attempts": max((int(d.get("attempt") or 1) for d in dests.values()), default=0),
        "last_error": _last_error(record),
        "final": dict(record.get("final") or {}),
    }


@dataclass
class Filter:
    """A search: every given field must match (empty fields match everything)."""

    state: str = ""
    sender: str = ""
    sender_domain: str = ""
    recipient: str = ""
    recipient_domain: str = ""
    domain: str = ""
    destination: str = ""
    min_age: float = 0.0
    max_age: float = 0.0
    min_size: int = 0
    max_size: int = 0

    def empty(self) -> bool:
        return self == Filter()

    def matches(self, m: dict[str, Any]) -> bool:
        rcpts = [r.lower() for r in m["recipients"]]
        sender = m["sender"].lower()
        if self.state and m["state"] != self.state:
            return False
        if self.sender and sender != self.sender.lower():
            return False
        if self.sender_domain and _domain(sender) != self.sender_domain.lower():
            return False
        if self.recipient and self.recipient.lower() not in rcpts:
            return False
        if self.recipient_domain and self.recipient_domain.lower() not in {
            _domain(r) for r in rcpts
        }:
            return False
        if self.domain:
            d = self.domain.lower()
            if d != _domain(sender) and d not in {_domain(r) for r in rcpts}:
                return False
        if self.destination and self.destination.lower() not in m["destinations"]:
            return False
        if self.min_age and m["age"] < self.min_age:
            return False
        if self.max_age and m["age"] > self.max_age:
            return False
        if self.min_size and m["size"] < self.min_size:
            return False
        if self.max_size and m["size"] > self.max_size:
            return False
        return True


def qshape(records: list[dict[str, Any]], now: float) -> dict[str, Any]:
    """Counts by state, and per destination domain: messages by age bucket (what
    Postfix's qshape shows) and the last error seen there."""
    by_state = dict.fromkeys(STATES, 0)
    dests: dict[str, dict[str, Any]] = {}
    for record in records:
        state = message_state(record)
        by_state[state] = by_state.get(state, 0) + 1
        if state == "failed":
            continue
        age_min = max(0.0, now - float(record.get("received_at") or now)) / 60
        bucket = next((i for i, b in enumerate(AGE_BUCKETS) if age_min < b), len(AGE_BUCKETS))
        for key, d in (record.get("dests") or {}).items():
            if not isinstance(d, dict) or d.get("status") == "done":
                continue
            name = str(d.get("domain") or key)
            row = dests.setdefault(
                name,
                {
                    "destination": name,
                    "total": 0,
                    "ages": [0] * (len(AGE_BUCKETS) + 1),
                    "deferred": 0,
                    "held": 0,
                    "last_error": None,
                },
            )
            row["total"] += 1
            row["ages"][bucket] += 1
            if state == "held":
                row["held"] += 1
            if d.get("status") == "deferred":
                row["deferred"] += 1
            last = d.get("last")
            if last and (
                row["last_error"] is None
                or float(last.get("at") or 0) > float(row["last_error"].get("at") or 0)
            ):
                row["last_error"] = last
    rows = sorted(dests.values(), key=lambda r: (-r["total"], r["destination"]))
    return {
        "total": sum(v for k, v in by_state.items() if k != "failed"),
        "by_state": by_state,
        "age_buckets": [f"{b}m" for b in AGE_BUCKETS] + [f"{AGE_BUCKETS[-1]}m+"],
        "destinations": rows,
    }
