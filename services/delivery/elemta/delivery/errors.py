"""Classification: every result, whatever produced it, becomes an SMTP-style reply.

A :class:`~elemta.common.replies.Reply` is what a server said (or what Elemta
says in its place when no server could be asked) and decides the recipient's
status: 2xx delivered, 4xx deferred, 5xx failed. The enhanced status code
(RFC 3463) is taken from the reply text when the server sent one, else derived
from the reply class. DNS failures carry their reply (``err.reply``).

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
not sent: outcome could not be recorded   451   4.3.0     deferred
========================================  ====  ========  ===========
"""

from __future__ import annotations

import os

from elemta.common.envelope import RecipientResult
from elemta.common.replies import Reply, ReplyError

__all__ = [
    "NOT_RECORDABLE",
    "SessionFailure",
    "connect_failure",
    "lost_connection",
    "not_recorded",
]


class SessionFailure(ReplyError):
    """The session with this host failed before any recipient got an answer:
    try the next address or MX host. ``reply`` says why."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(reply.text, code=reply.code, enhanced=reply.enhanced)


# The message was not sent: right before its end, NATS was unreachable or an
# earlier end had waited too long to be stored (.unrecorded), so that a delivery
# could not have been recorded (and would be made again when the message is
# offered again). The peer got no end of data, so it delivers nothing.
NOT_RECORDABLE = Reply(451, "4.3.0", "not sent: the message store cannot record a delivery now")


def not_recorded(result: RecipientResult) -> bool:
    """Whether ``result`` is :data:`NOT_RECORDABLE`'s: nothing was sent."""
    return result.code == NOT_RECORDABLE.code and result.text == NOT_RECORDABLE.text


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
