"""Ingress's own reply texts, and the enhanced status code on every reply.

aiosmtpd answers many commands itself, without enhanced codes;
:func:`with_enhanced_code` rewrites the reply where Elemta's wording differs and
otherwise adds the code (:func:`elemta.common.replies.with_enhanced_code`)
before anything is sent.
"""

from __future__ import annotations

from elemta.common import replies

__all__ = [
    "BARE_NEWLINE",
    "LINE_TOO_LONG",
    "SHUTDOWN",
    "TOO_BIG",
    "with_enhanced_code",
]

SHUTDOWN = "421 4.3.2 Service shutting down"
TOO_BIG = "552 5.3.4 Message size exceeds fixed limit"
LINE_TOO_LONG = "500 5.5.2 Line too long"
BARE_NEWLINE = "550 5.6.11 Message refused: bare CR or LF in message data"

# aiosmtpd's own replies that need more than an enhanced code added.
_REWRITES = {
    "500 Command line too long": LINE_TOO_LONG,
    "552 Error: message size exceeds fixed maximum message size": TOO_BIG,
    "553 5.1.3 Error: malformed address": "501 5.1.3 Bad address syntax",
    "250 OK": "250 2.0.0 Ok",
    "221 Bye": "221 2.0.0 Bye",
    "220 Ready to start TLS": "220 2.0.0 Ready to start TLS",
    "454 TLS not available": "454 4.7.0 TLS not available due to local problem",
    "503 Error: send HELO first": "503 5.5.1 Error: send HELO/EHLO first",
}


# Replies are mostly the same few texts: each is rewritten once.
_DONE: dict[str, str] = {}
_DONE_MAX = 1024


def with_enhanced_code(reply: str) -> str:
    """``reply`` with an RFC 3463 enhanced status code after the reply code."""
    done = _DONE.get(reply)
    if done is None:
        if len(_DONE) >= _DONE_MAX:
            _DONE.clear()
        done = _DONE[reply] = _REWRITES.get(reply) or replies.with_enhanced_code(reply)
    return done
