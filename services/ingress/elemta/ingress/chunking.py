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

:class:`ChunkingCommands` is the ``BDAT`` command of :class:`.protocol.IngressSMTP`
(a mixin); the assembled message is checked, handed on and answered by the
session's ``_complete``, the same as DATA's.
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import TYPE_CHECKING

from . import metrics
from .data import longest_line
from .replies import BARE_NEWLINE, LINE_TOO_LONG, TOO_BIG
from .sessionparts import SessionParts

if TYPE_CHECKING:
    from aiosmtpd.smtp import Envelope


__all__ = ["BDAT_SYNTAX", "ChunkingCommands", "check_chunked", "parse_bdat", "read_chunk"]

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


class ChunkingCommands(SessionParts):
    """``BDAT`` for the session it is mixed into (:class:`.protocol.IngressSMTP`).

    The chunks of the open transaction are kept in the session's ``_chunks``
    (None when no BDAT was given; a new transaction clears it, and DATA is
    refused while it is set); once they outgrow ``ingress.max_message_size``
    ``_chunks_too_big`` is set and the rest are read and dropped.
    """

    async def smtp_BDAT(self, arg: str) -> None:  # noqa: N802
        parsed = parse_bdat(arg)
        if parsed is None:
            # the size is unknown, so the client and we are out of step: close
            self.goodbye(f"421 4.5.4 {self.hostname} Error: bad BDAT syntax, closing")
            return
        size, last = parsed
        envelope = self.envelope
        room = 0  # a refused chunk is read and dropped
        if envelope is not None and envelope.mail_from is not None and envelope.rcpt_tos:
            room = self.settings.max_message_size - len(self._chunks or b"")
        self._in_data = True
        self._arm(self.settings.data_timeout)
        try:
            chunk = await read_chunk(self._reader, size, room)
        except asyncio.IncompleteReadError:
            if self.transport is not None:
                self.transport.close()
            return
        finally:
            self._in_data = False
        if self.session is None or not self.session.host_name:
            await self.push("503 5.5.1 Error: send HELO/EHLO first")
            return
        if envelope is None or envelope.mail_from is None:
            await self.push("503 5.5.1 Error: need MAIL command")
            return
        if not envelope.rcpt_tos:
            await self.push("503 5.5.1 Error: need RCPT command")
            return
        if self._chunks is None:
            self._chunks = bytearray()
            self._chunks_too_big = False
        if (chunk is None and size) or self._chunks_too_big:
            self._chunks_too_big = True
            self._chunks.clear()
        elif chunk:
            self._chunks += chunk
        if not last:
            await self.push(f"250 2.0.0 {size} octets received")
            return
        await self._bdat_last(envelope)

    async def _bdat_last(self, envelope: Envelope) -> None:
        refusal = self.settings.processor.precheck()
        content = b"" if self._chunks is None else bytes(self._chunks)
        too_big = self._chunks_too_big
        self._chunks = None
        if refusal:
            metrics.count_message("tempfail")
            self._log_reject("BDAT", refusal, envelope)
            self._new_transaction()
            await self.push(refusal)
            return
        await self._complete(None if too_big else content, envelope, time.perf_counter(), True)
