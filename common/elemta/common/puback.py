"""Publish to JetStream and wait for the PubAck, with as little work per message as possible.

Every accepted message is one JetStream publish whose PubAck the SMTP client waits
for, so this is on the path of every message. ``JetStreamContext.publish`` goes
through ``Client.request``: a header dict copied and checked key by key, a future
with a done-callback, ``asyncio.wait_for`` (a task of its own), the PubAck turned
into a dataclass. :func:`publish_acked` does the same exchange with nats-py's own
response multiplexer (the one ``request`` uses: one wildcard subscription for every
reply): the header block is built once by the caller (:func:`header_block`), one
future is registered, the timeout is a timer on the loop, and the PubAck's
sequence is read from its JSON.

Errors are those of ``JetStreamContext.publish``: ``NoStreamResponseError`` when no
stream takes the subject (nothing stored), an ``APIError`` subclass when the stream
refused it (nothing stored), ``nats.errors.TimeoutError`` when no PubAck came in
time (stored or not: unknown), and whatever the connection raises when it is closed
or draining.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from secrets import token_hex

import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.errors import APIError, NoStreamResponseError
from nats.protocol import command

__all__ = ["header_block", "publish_acked", "request"]

_STATUS = "Status"
_NO_RESPONDERS = "503"


def header_block(headers: Mapping[str, str]) -> bytes:
    """The NATS header section for ``headers`` (``NATS/1.0`` line, ``Key: value``
    lines, blank line). Values are the caller's: no line breaks."""
    lines = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    if lines.count("\n") != len(headers):
        raise ValueError("a NATS header value holds a line break")
    return f"NATS/1.0\r\n{lines}\r\n".encode()


async def publish_acked(
    nc: NATS, subject: str, payload: bytes, headers: bytes | None, wait: float
) -> int:
    """Publish ``payload`` with the header block ``headers`` (if any) to ``subject``
    and return the stream sequence from its PubAck, waited for ``wait`` seconds."""
    msg = await request(nc, subject, payload, headers, wait)
    if msg.headers and msg.headers.get(_STATUS) == _NO_RESPONDERS:
        raise NoStreamResponseError
    resp = json.loads(msg.data)
    if "error" in resp:
        raise APIError.from_error(resp["error"])
    return int(resp["seq"])


async def request(
    nc: NATS, subject: str, payload: bytes, headers: bytes | None, wait: float
) -> Msg:
    """``Client.request`` with one future and a timer: the reply to ``payload``
    (with the header block ``headers``, if any) on ``subject``, waited for ``wait``
    seconds (``nats.errors.TimeoutError`` after that). A "no responders" status
    comes back as the reply."""
    if nc.is_closed:
        raise nats.errors.ConnectionClosedError
    if nc.is_draining_pubs:
        raise nats.errors.ConnectionDrainingError
    if len(payload) > nc._max_payload:
        raise nats.errors.MaxPayloadError
    if not nc._resp_sub_prefix:
        await nc._init_request_sub()
    assert nc._resp_sub_prefix
    token = nc._nuid.next()
    token.extend(token_hex(2).encode())
    key = token.decode()
    inbox = (nc._resp_sub_prefix + token).decode()
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Msg] = loop.create_future()
    nc._resp_map[key] = future
    timer = loop.call_later(wait, _expire, future)
    if headers is None:
        cmd = command.pub_cmd(subject, inbox, payload)
    else:
        cmd = command.hpub_cmd(subject, inbox, headers, payload)
    try:
        await nc._send_command(cmd)
        if nc._flush_queue is not None and nc._flush_queue.empty():
            await nc._flush_pending()
        return await future
    finally:
        timer.cancel()
        nc._resp_map.pop(key, None)


def _expire(future: asyncio.Future[Msg]) -> None:
    if not future.done():
        future.set_exception(nats.errors.TimeoutError())
