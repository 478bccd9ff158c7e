"""A message's two parts: the header section and the body.

Policy may hand back a changed header section or body (a milter edited a
header or replaced the body); ingress puts the message together again. Both
split it here, so that they agree on where the header section ends: at the
first empty line. The header section keeps the CRLF of its last field; the
empty line belongs to neither part.
"""

from __future__ import annotations

__all__ = ["join_message", "split_message"]


def split_message(message: bytes) -> tuple[bytes, bytes]:
    """``(header section, body)`` of a CRLF message."""
    if message.startswith(b"\r\n"):
        return b"", message[2:]
    end = message.find(b"\r\n\r\n")
    if end < 0:  # no empty line: all header section (or not a message at all)
        return message, b""
    return message[: end + 2], message[end + 4 :]


def join_message(header: bytes, body: bytes) -> bytes:
    """The message of a header section and a body, with the empty line between."""
    if header and not header.endswith(b"\r\n"):
        header += b"\r\n"
    return header + b"\r\n" + body
