"""The check pipeline: stage by stage, the first non-accept verdict wins.

A check is an object with any of the coroutine methods ``connect``, ``mail``,
``rcpt`` and ``data``; each returns a :class:`Verdict` or ``None`` (no opinion).
Accept verdicts still contribute their headers, so that, say, an SPF check can
add ``Received-SPF`` while letting the message through.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Pipeline", "Verdict"]

ACCEPT, REJECT, TEMPFAIL, HOLD, DISCARD = "accept", "reject", "tempfail", "hold", "discard"


@dataclass
class Verdict:
    action: str = ACCEPT
    code: int = 0
    enhanced: str = ""
    reason: str = ""
    add_headers: list[tuple[str, str]] = field(default_factory=list)
    remove_headers: list[str] = field(default_factory=list)


class Pipeline:
    def __init__(self, checks: list[Any] | None = None) -> None:
        self.checks = list(checks or [])

    async def run(self, stage: str, **kwargs: Any) -> Verdict:
        result = Verdict()
        for check in self.checks:
            fn = getattr(check, stage, None)
            if fn is None:
                continue
            verdict = await fn(**kwargs)
            if verdict is None:
                continue
            result.add_headers.extend(verdict.add_headers)
            result.remove_headers.extend(verdict.remove_headers)
            if verdict.action != ACCEPT:
                verdict.add_headers = result.add_headers
                verdict.remove_headers = result.remove_headers
                return verdict
        return result
