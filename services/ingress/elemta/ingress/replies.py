"""Reply texts and RFC 2034/3463 enhanced status codes for every reply.

aiosmtpd answers many commands itself, without enhanced codes;
:func:`with_enhanced_code` adds one (or rewrites the reply where Elemta's wording
differs) before anything is sent.
"""

from __future__ import annotations

import re

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

_HAS_ENHANCED = re.compile(r"^\d{3}[ -][245]\.\d{1,3}\.\d{1,3}( |$)")
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
_DEFAULT_ENHANCED = {
    "220": "2.0.0",
    "221": "2.0.0",
    "250": "2.0.0",
    "251": "2.1.5",
    "252": "2.0.0",
    "421": "4.3.0",
    "450": "4.2.0",
    "451": "4.3.0",
    "452": "4.3.1",
    "454": "4.7.0",
    "500": "5.5.2",
    "501": "5.5.4",
    "502": "5.5.1",
    "503": "5.5.1",
    "504": "5.5.4",
    "530": "5.7.0",
    "552": "5.3.4",
    "553": "5.1.3",
    "554": "5.7.0",
    "555": "5.5.4",
}


def with_enhanced_code(reply: str) -> str:
    """``reply`` with an RFC 3463 enhanced status code after the reply code."""
    if reply in _REWRITES:
        return _REWRITES[reply]
    if len(reply) < 3 or reply[0] not in "245" or not reply[:3].isdigit():
        return reply
    if _HAS_ENHANCED.match(reply) and reply[4] == reply[0]:
        return reply
    code, sep, text = reply[:3], reply[3:4] or " ", reply[4:]
    ext = _DEFAULT_ENHANCED.get(code, f"{code[0]}.0.0")
    return f"{code}{sep}{ext} {text}".rstrip()
