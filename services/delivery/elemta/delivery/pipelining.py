"""Outbound PIPELINING (RFC 2920) and CHUNKING (RFC 3030) on aiosmtplib.

aiosmtplib sends one command and waits for its reply, and its protocol drops
bytes that arrive while a parsed reply waits to be picked up. That is safe for
one command at a time, and loses replies when several are in flight.
:func:`install` swaps in :class:`PipeliningProtocol`, which keeps those bytes
and reads the next reply from its buffer first; with it :func:`batch` writes
``MAIL FROM``, every ``RCPT TO`` and ``DATA`` in one packet and reads their
replies in order, saving a round trip per recipient.

aiosmtplib has no BDAT: :func:`bdat` sends the whole message as one chunk,
``BDAT <size> LAST``, raw (no dot-stuffing, no end-of-data line), when the
peer offers CHUNKING. :func:`message_after_354` finishes a pipelined ``DATA``.
"""

from __future__ import annotations

from typing import Any

import aiosmtplib
import aiosmtplib.protocol as _protocol
import aiosmtplib.smtp as _smtp
from aiosmtplib import SMTPResponse, SMTPServerDisconnected

__all__ = ["PipeliningProtocol", "batch", "bdat", "install", "message_after_354"]


class PipeliningProtocol(_protocol.SMTPProtocol):
    """aiosmtplib's protocol, keeping replies that arrive ahead of their reader."""

    def data_received(self, data: bytes) -> None:
        waiter = self._response_waiter
        if waiter is not None and self._response_pending and waiter.done():
            self._buffer.extend(data)  # the next reply, already on its way
            return
        super().data_received(data)

    async def read_response(self, timeout: float | None = None) -> SMTPResponse:  # noqa: ASYNC109
        waiter = self._response_waiter
        if waiter is not None and not waiter.done() and self._buffer:
            try:
                response = self._read_response_from_buffer()
            except Exception as exc:
                self._set_response_exception(waiter, exc)
            else:
                if response is not None:
                    waiter.set_result(response)
        return await super().read_response(timeout)


def install() -> None:
    _smtp.SMTPProtocol = PipeliningProtocol  # type: ignore[misc]


def _protocol_of(client: aiosmtplib.SMTP) -> Any:
    protocol = client.protocol
    if protocol is None or protocol._command_lock is None:
        raise SMTPServerDisconnected("Connection lost")
    return protocol


async def batch(
    client: aiosmtplib.SMTP, commands: list[bytes], within: float | None
) -> list[SMTPResponse]:
    """Write every command at once, then read one reply per command, in order."""
    protocol = _protocol_of(client)
    async with protocol._command_lock:
        protocol._response_pending = True
        protocol.write(b"".join(c + b"\r\n" for c in commands))
        return [await protocol.read_response(timeout=within) for _ in commands]


async def message_after_354(
    client: aiosmtplib.SMTP, body: bytes, within: float | None, as_is: bool = False
) -> SMTPResponse:
    """The message, dot-stuffed, and the end-of-data line; the final reply.

    ``as_is``: the message is known to need neither (CRLF only, ending with one,
    no line beginning with "."; see ``DeliveryJob.wire_ready``), so it is sent
    without the passes over it that would find nothing to change.
    """
    protocol = _protocol_of(client)
    if as_is and body.endswith(b"\r\n"):
        data = body
    else:
        data = _protocol.PERIOD_REGEX.sub(b"..", _protocol.normalize_message_line_endings(body))
    async with protocol._command_lock:
        protocol._response_pending = True
        protocol.write(data + b".\r\n")
        return await protocol.read_response(timeout=within)


async def bdat(client: aiosmtplib.SMTP, body: bytes, within: float | None) -> SMTPResponse:
    """``BDAT <size> LAST`` and the message as it is stored; the final reply."""
    protocol = _protocol_of(client)
    async with protocol._command_lock:
        protocol._response_pending = True
        protocol.write(b"BDAT %d LAST\r\n" % len(body) + body)
        return await protocol.read_response(timeout=within)
