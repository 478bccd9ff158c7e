"""Client text made safe wherever it is shown again: replies, logs and headers.

A client may put any octet in a command line: NUL, a bare CR, terminal escape
sequences, octets that are not UTF-8 (which aiosmtpd keeps as surrogate escapes).
Shown back raw, they break the reply (RFC 5321 section 4.2: a reply line is
printable US-ASCII), split a log line into two events, or rewrite an operator's
terminal. Every character that is not fit is shown as ``?``.
"""

from __future__ import annotations

import logging

__all__ = ["PrintableLogs", "clean_text", "reply_line"]

# A reply line is at most 512 octets with its CRLF (RFC 5321 section 4.5.3.1.5).
MAX_REPLY_LINE = 510


def clean_text(text: str, limit: int = 255, special: str = "") -> str:
    """``text`` printable (Unicode letters kept), one line, at most ``limit`` characters.

    For headers and logs. Characters in ``special`` become ``?`` too.
    """
    if len(text) <= limit and text.isprintable() and not any(c in text for c in special):
        return text  # the usual case, without a pass per character
    return "".join(c if c.isprintable() and c not in special else "?" for c in text[:limit])


def reply_line(text: str) -> str:
    """One reply line as it may go on the wire: printable ASCII, bounded."""
    if text.isascii() and text.isprintable() and len(text) <= MAX_REPLY_LINE:
        return text
    return "".join(c if " " <= c <= "~" else "?" for c in text[:MAX_REPLY_LINE])


class PrintableLogs(logging.Filter):
    """Makes each record printable, so that client bytes never split or forge a log line.

    Set on aiosmtpd's logger (``mail.log``), which logs an unknown command as the
    client sent it.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if not message.isprintable():
            record.msg, record.args = clean_text(message, limit=2000), ()
        return True
