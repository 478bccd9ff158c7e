"""CHUNKING (RFC 3030): ``BDAT <size> [LAST]`` reads exactly ``size`` octets, no
end mark and no dot-stuffing, so framing cannot be confused by the content.

The same limits and smuggling safety as DATA apply to the assembled message:
over ``ingress.max_message_size`` is ``552 5.3.4`` (the rest of the chunks are
read and dropped, the transaction ends at ``LAST``); a bare CR or LF is
``550 5.6.11`` (such a message could end early when relayed with DATA); a line
over ``ingress.max_line_length`` is ``500 5.5.2``. A message that does not end
with CRLF gets one, as Postfix adds it. The durability contract is DATA's: the
reply to ``BDAT ... LAST`` is ``250`` only after JetStream acknowledged the store.

A chunk is always read in full before its reply, even when the command is
refused (no MAIL, no RCPT, a bad size), so that the client and server keep in
step (RFC 3030 section 2: the octets are data whatever the reply).
"""

from __future__ import annotations

import asyncio
import re

from .data import longest_line
from .replies import BARE_NEWLINE, LINE_TOO_LONG, TOO_BIG

__all__ = ["BDAT_SYNTAX", "check_chunked", "parse_bdat", "read_chunk"]

BDAT_SYNTAX = "501 5.5.4 Syntax: BDAT chunk-size [LAST]"
_ARG = re.compile(r"^(\d{1,15})(?: +(LAST))? *$", re.IGNORECASE)
READ_PIECE = 1 << 20


def parse_bdat(arg: str | None) -> tuple[int, bool] | None:
    """``(size, last)``, or None when the argument is malformed."""
    m = _ARG.match(arg or "")
    if not m:
        return None
    return int(m.group(1)), m.group(2) is not None


async def read_chunk(reader: asyncio.StreamReader, size: int, room: int) -> bytes | None:
    """Read exactly ``size`` octets; None (and the octets dropped) when more than
    ``room`` of them would have to be kept."""
    if size <= room:
        return await reader.readexactly(size)
    left = size
    while left:
        got = await reader.readexactly(min(left, READ_PIECE))
        left -= len(got)
    return None


def check_chunked(content: bytes, max_size: int, max_line: int) -> tuple[bytes, str]:
    """The assembled message (CRLF-terminated), or the refusal."""
    if len(content) > max_size:
        return b"", TOO_BIG
    if content and not content.endswith(b"\r\n"):
        content += b"\r\n"
    crlf = content.count(b"\r\n")
    if not content.count(b"\r") == content.count(b"\n") == crlf:
        return b"", BARE_NEWLINE
    if longest_line(content) > max_line:
        return b"", LINE_TOO_LONG
    return content, ""
