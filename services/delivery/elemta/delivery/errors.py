"""Classification: every result, whatever produced it, becomes an SMTP-style reply.

A :class:`Reply` is what a server said (or what Elemta says in its place when no
server could be asked) and decides the recipient's status: 2xx delivered, 4xx
deferred, 5xx failed. The enhanced status code (RFC 3463) is taken from the
reply text when the server sent one, else derived from the reply class.

Replies Elemta makes up itself, when no server answered:

========================================  ====  ========  ===========
condition                                 code  enhanced  status
========================================  ====  ========  ===========
connection refused, no answer from host   421   4.4.1     deferred
connection dropped, command timed out     421   4.4.2     deferred
DNS temporary failure                     451   4.4.3     deferred
DNS: no such domain / no MX nor address   550   5.1.2     failed
DNS: MX host without address              550   5.4.4     failed
DNS: null MX (RFC 7505)                   556   5.1.10    failed
SMTPUTF8 needed, not offered (RFC 6531)   553   5.6.7     failed
bad mailbox name (Maildir)                550   5.1.3     failed
local I/O error (Maildir)                 451   4.3.0     deferred
mailbox disk full (Maildir)               452   4.2.2     deferred
route misconfigured, internal error       451   4.3.5     deferred
========================================  ====  ========  ===========
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from elemta.common.envelope import RecipientResult
from elemta.common.resolver import DnsError

__all__ = [
    "Reply",
    "SessionFailure",
    "connect_failure",
    "lost_connection",
    "status_of",
]

_ENHANCED = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})(?:\s+|$)")
_DEFAULT_ENHANCED = {2: "2.0.0", 4: "4.0.0", 5: "5.0.0"}


def status_of(code: int) -> str:
    """2xx delivered, 5xx failed, anything else (4xx, nonsense) deferred."""
    cls = code // 100
    if cls == 2:
        return "delivered"
    if cls == 5:
        return "failed"
    return "deferred"


@dataclass(frozen=True, slots=True)
class Reply:
    code: int
    enhanced: str
    text: str

    @classmethod
    def parse(cls, code: int, message: str) -> Reply:
        """A server reply; multi-line text joins into one line, each line's
        repetition of the enhanced code (RFC 2034) dropped."""
        lines = [line.strip() for line in message.splitlines() if line.strip()]
        klass = code // 100
        m = _ENHANCED.match(lines[0]) if lines else None
        enhanced = f"{m.group(1)}.{m.group(2)}.{m.group(3)}" if m else ""
        if enhanced:
            lines = [
                line[len(enhanced) :].lstrip() if line.startswith(enhanced) else line
                for line in lines
            ]
        text = " ".join(line for line in lines if line)
        if klass not in _DEFAULT_ENHANCED:
            return cls(code, "4.5.0", f"unexpected reply: {code} {text}".strip())
        if not enhanced or int(enhanced[0]) != klass:  # none, or of another class than the reply
            enhanced = _DEFAULT_ENHANCED[klass]
        return cls(code, enhanced, text)

    @classmethod
    def from_dns(cls, err: DnsError) -> Reply:
        return cls(err.code, err.enhanced, err.text)

    @property
    def status(self) -> str:
        return status_of(self.code)

    @property
    def ok(self) -> bool:
        return self.code // 100 == 2

    def result(self, recipient: str) -> RecipientResult:
        return RecipientResult(recipient, self.status, self.code, self.enhanced, self.text)

    def __str__(self) -> str:
        return f"{self.code} {self.enhanced} {self.text}"


class SessionFailure(Exception):
    """The session with this host failed before any recipient got an answer:
    try the next address or MX host."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(str(reply))
        self.reply = reply


def connect_failure(peer: str, exc: BaseException) -> Reply:
    """Could not reach ``peer``: refused, unreachable, no greeting in time (4.4.1)."""
    reason = _reason(exc)
    return Reply(421, "4.4.1", f"connect to {peer}: {reason}")


def lost_connection(peer: str, stage: str, exc: BaseException) -> Reply:
    """The connection broke or a command timed out (4.4.2)."""
    if isinstance(exc, TimeoutError):
        return Reply(421, "4.4.2", f"conversation with {peer} timed out while {stage}")
    return Reply(421, "4.4.2", f"lost connection with {peer} while {stage}: {_reason(exc)}")


def _reason(exc: BaseException) -> str:
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, TimeoutError):
            return "timed out"
        if isinstance(cause, OSError) and cause.errno:
            return os.strerror(cause.errno)
        cause = cause.__cause__
    return str(exc) or type(exc).__name__
