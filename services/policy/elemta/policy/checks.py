"""The check pipeline: stage by stage, the first non-accept verdict wins.

A check is an object with any of the coroutine methods ``connect``, ``mail``,
``rcpt`` and ``data``; each returns a :class:`Verdict` or ``None`` (no opinion).
Accept verdicts still contribute their headers, so that, say, an SPF check can
add ``Received-SPF`` while letting the message through, and their
:class:`Changes` (milters edit the envelope and the message) and ``notes``
(what a check found, for the message's policy record).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Changes", "Gathered", "Pipeline", "Verdict"]

ACCEPT, REJECT, TEMPFAIL, HOLD, DISCARD = "accept", "reject", "tempfail", "hold", "discard"


@dataclass
class Changes:
    """Envelope and message changes, applied by ingress before it stores the message.

    ``header`` replaces the header section and ``body`` the body of the message
    the check was given (split at the first empty line, see
    :mod:`elemta.common.message`); ``None`` leaves them as they are.
    """

    sender: str | None = None
    add_recipients: list[str] = field(default_factory=list)
    delete_recipients: list[str] = field(default_factory=list)
    header: bytes | None = None
    body: bytes | None = None

    def merge(self, later: Changes) -> None:
        """Take a later check's changes on top of these."""
        if later.sender is not None:
            self.sender = later.sender
        self.add_recipients.extend(later.add_recipients)
        self.delete_recipients.extend(later.delete_recipients)
        if later.header is not None:
            self.header = later.header
        if later.body is not None:
            self.body = later.body


@dataclass
class Verdict:
    action: str = ACCEPT
    code: int = 0
    enhanced: str = ""
    reason: str = ""
    add_headers: list[tuple[str, str]] = field(default_factory=list)
    remove_headers: list[str] = field(default_factory=list)
    changes: Changes | None = None
    notes: dict[str, Any] = field(default_factory=dict)


class Gathered:
    """The verdict of a sequence of checks: accept verdicts contribute their
    header edits, the first other verdict ends the sequence carrying them all."""

    def __init__(self) -> None:
        self.result = Verdict()

    def add(self, verdict: Verdict) -> Verdict | None:
        """Take one check's verdict; return the final verdict when it ends the run."""
        result = self.result
        result.add_headers.extend(verdict.add_headers)
        result.remove_headers.extend(verdict.remove_headers)
        result.notes.update(verdict.notes)
        if verdict.changes is not None:
            if result.changes is None:
                result.changes = Changes()
            result.changes.merge(verdict.changes)
        if verdict.action == ACCEPT:
            return None
        verdict.add_headers = result.add_headers
        verdict.remove_headers = result.remove_headers
        verdict.notes = result.notes
        verdict.changes = result.changes
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
