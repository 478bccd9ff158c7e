"""The check pipeline: stage by stage, the first non-accept verdict wins.

A check is an object with any of the coroutine methods ``connect``, ``mail``,
``rcpt`` and ``data``; each returns a :class:`Verdict` or ``None`` (no opinion).
Accept verdicts still contribute their headers, so that, say, an SPF check can
add ``Received-SPF`` while letting the message through.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Gathered", "Pipeline", "Verdict"]

ACCEPT, REJECT, TEMPFAIL, HOLD, DISCARD = "accept", "reject", "tempfail", "hold", "discard"


@dataclass
class Verdict:
    action: str = ACCEPT
    code: int = 0
    enhanced: str = ""
    reason: str = ""
    add_headers: list[tuple[str, str]] = field(default_factory=list)
    remove_headers: list[str] = field(default_factory=list)


class Gathered:
    """The verdict of a sequence of checks: accept verdicts contribute their
    header edits, the first other verdict ends the sequence carrying them all."""

    def __init__(self) -> None:
        self.result = Verdict()

    def add(self, verdict: Verdict) -> Verdict | None:
        """Take one check's verdict; return the final verdict when it ends the run."""
        self.result.add_headers.extend(verdict.add_headers)
        self.result.remove_headers.extend(verdict.remove_headers)
        if verdict.action == ACCEPT:
            return None
        verdict.add_headers = self.result.add_headers
        verdict.remove_headers = self.result.remove_headers
        return verdict


class Pipeline:
    def __init__(self, checks: list[Any] | None = None) -> None:
        self.checks = list(checks or [])

    async def run(self, stage: str, **kwargs: Any) -> Verdict:
        gathered = Gathered()
        for check in self.checks:
            fn = getattr(check, stage, None)
            if fn is None:
                continue
            verdict = await fn(**kwargs)
            if verdict is None:
                continue
            final = gathered.add(verdict)
            if final is not None:
                return final
        return gathered.result
