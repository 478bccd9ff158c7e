"""Bulk DATA: read up to the end mark in one buffer, then check the whole.

aiosmtpd reads DATA line by line, which costs a Python round per line; here the
StreamReader looks for ``<CRLF>.<CRLF>`` itself (in C) and the checks are a few
passes over the buffer. Only ``<CRLF>.<CRLF>`` ends the data: ``<LF>.<LF>``,
``<CR>.<CR>`` and mixtures are data, and since any bare CR or LF refuses the
message, they can never smuggle a second message past this server or the next.
"""

from __future__ import annotations

import asyncio
import re

from .replies import BARE_NEWLINE, LINE_TOO_LONG, TOO_BIG

__all__ = ["MARK", "Checked", "check_data", "longest_line", "read_data", "unstuff", "wire_ready"]

MARK = b"\r\n.\r\n"
# A line beginning with a dot. re finds it in about half the time bytes.find
# does (its scan skips to each CR in C).
_DOT_LINE = re.compile(rb"\r\n\.")


def unstuff(data: bytes) -> bytes:
    """Undo dot-stuffing (RFC 5321 section 4.5.2): drop the first dot of every line."""
    if data.startswith(b"."):
        data = data[1:]
    return data.replace(b"\r\n.", b"\r\n")


def longest_line(data: bytes) -> int:
    return max(map(len, data.split(b"\r\n")), default=0)


class Checked(bytes):
    """Message content that passed the DATA checks (CRLF line ends only).

    ``dot_lines`` is False when no line of it can begin with "." — none came
    dot-stuffed — which the DATA checks found out already: :func:`wire_ready`
    then need not search 100 KB for it a second time. Plain ``bytes`` (BDAT, or
    anything else) mean "not known".
    """

    dot_lines: bool = True


def check_data(raw: bytes, max_size: int, max_line: int) -> tuple[bytes, str]:
    """The message in ``raw`` DATA (ending with the end mark), or the refusal.

    Returns ``(content, "")`` with the content dot-unstuffed, or ``(b"", reply)``.
    Made to be cheap on large bodies: a few passes in C, no loop per line (on
    100 KB of 78-octet lines about two thirds of the time of counting CRs and
    LFs apart and searching for dots with ``bytes.replace``).
    """
    lines = raw.splitlines()  # breaks at CRLF, and at a bare CR or LF
    # raw ends with a line break, so there are as many breaks as lines. With
    # as many LFs, no break is a lone CR; with two octets a break besides the
    # lines, no break is a lone LF either: every break is a CRLF.
    lengths = list(map(len, lines))
    if raw.count(b"\n") != len(lines) or sum(lengths) + 2 * len(lines) != len(raw):
        return b"", BARE_NEWLINE
    wire = raw[:-3]  # without the ".\r\n" of the end mark
    dot_lines = wire.startswith(b".") or _DOT_LINE.search(wire) is not None
    content = unstuff(wire) if dot_lines else wire
    if len(content) > max_size:
        return b"", TOO_BIG
    # A stuffed line is one octet longer on the wire; look closer only then.
    if max(lengths) > max_line and longest_line(content) > max_line:
        return b"", LINE_TOO_LONG
    checked = Checked(content)
    checked.dot_lines = dot_lines
    return checked, ""


def wire_ready(message: bytes, content: bytes) -> bool:
    """Whether ``message`` can go out on DATA exactly as stored.

    That is: CRLF line ends only, ending with one, and no line beginning with
    ".", so that the next hop's DATA needs neither line-end normalization nor
    dot-stuffing (both a pass over the whole message, which on 100 KB cost
    delivery more than the rest of its work on it). ``content`` is what the DATA
    or BDAT checks returned (CRLF only, checked already); ``message`` ends with
    it after what ingress and policy put before it (``Received:``, added header
    fields), which is short and checked here in full. When ``message`` does not
    end with ``content`` (policy replaced the body), the answer is no.
    """
    head = len(message) - len(content)
    if head < 0 or not message.endswith(b"\r\n") or not message.endswith(content):
        return False
    if getattr(content, "dot_lines", True) and (content.startswith(b".") or b"\r\n." in content):
        return False
    prefix = message[:head]
    if prefix and not prefix.endswith(b"\r\n"):
        return False  # content would not begin a line
    crlf = prefix.count(b"\r\n")
    if not prefix.count(b"\r") == prefix.count(b"\n") == crlf:
        return False
    return not (prefix.startswith(b".") or b"\n." in prefix)


def _advance(state: int, byte: int) -> int:
    """One step of the matcher for MARK: the longest matched prefix after ``byte``."""
    seq = MARK[:state] + bytes((byte,))
    for k in range(min(len(seq), len(MARK)), 0, -1):
        if seq.endswith(MARK[:k]):
            return k
    return 0


async def read_data(reader: asyncio.StreamReader, limit: int) -> bytes | None:
    """Read DATA up to and including ``<CRLF>.<CRLF>``; None when over ``limit`` octets.

    Past the limit the data is read and dropped until the end mark, so that
    the session can answer and go on.

    The reader's line limit is raised for the duration so that ``readuntil``
    finds the end mark in one buffer. The data stream is taken to begin with
    an implicit CRLF (the one that ended the DATA command), so an empty
    message is just ``.<CRLF>``.
    """
    # asyncio's StreamReader (not aiosmtpd) has no public way to raise its limit
    # for one read. Reading under aiosmtpd's 1001-octet limit instead, through
    # LimitOverrunError, measured 1.8 times slower (25 MB: 97 ms against 55 ms).
    # tests/fuzz/test_fuzz_parsing.py pins the framing on such a reader.
    saved = reader._limit  # type: ignore[attr-defined]
    reader._limit = limit + len(MARK)  # type: ignore[attr-defined]
    try:
        parts: list[bytes] = []
        size = 0
        oversize = False
        # Until no suffix of what was read can begin the end mark, read only
        # as much as cannot run past it; then hand over to readuntil.
        state = 2
        while 0 < state < len(MARK):
            got = await reader.readexactly(len(MARK) - state)
            for byte in got:
                state = _advance(state, byte)
            size += len(got)
            if oversize or size > limit:
                oversize = True
                parts.clear()
            else:
                parts.append(got)
        while state != len(MARK):
            try:
                chunk = await reader.readuntil(MARK)
                state = len(MARK)
            except asyncio.LimitOverrunError as exc:
                chunk = await reader.read(exc.consumed)
                oversize = True
                if chunk.endswith(MARK):
                    state = len(MARK)
            size += len(chunk)
            if oversize or size > limit:
                oversize = True
                parts.clear()
            else:
                parts.append(chunk)
        return None if oversize else b"".join(parts)
    finally:
        reader._limit = saved  # type: ignore[attr-defined]
