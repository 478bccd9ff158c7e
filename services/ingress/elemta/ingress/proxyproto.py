"""PROXY protocol v1 and v2 (HAProxy's specification) in front of a listener.

A load balancer that terminates TCP sends, before any SMTP, one header naming the
client it accepted the connection from. On listeners with ``proxy_protocol`` the
header is read first, only from ``ingress.proxy_networks``; the address it
carries is then the client's address for everything: ``Received:``, relay
control, policy, limits and logs. The greeting is sent only after the header.

Refusals (``docs/decisions.md``, "PROXY protocol"): a connection from outside
``ingress.proxy_networks`` hears ``421 4.7.0`` and is closed without a byte
read as a header (nobody else may claim an address); a malformed, unsupported or
missing header (none within ``HEADER_TIMEOUT``) closes the connection. A
``LOCAL`` header (the balancer's own health check) keeps the balancer's address.

On an implicit-TLS listener the header comes before the TLS handshake; the TLS
layer starts once the header is read, and any handshake octets that arrived
with the header are handed to it first.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import ssl
import struct
from collections.abc import Callable
from typing import Any

from elemta.common.networks import Networks

__all__ = ["HEADER_TIMEOUT", "ProxyFront", "ProxyHeaderError", "parse_header"]

log = logging.getLogger(__name__)

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V1_MAX = 107
HEADER_TIMEOUT = 10.0

Address = tuple[str, int]


class ProxyHeaderError(ValueError):
    """The header is malformed or of a kind not supported."""


def _v1(line: bytes) -> Address | None:
    parts = line.decode("ascii", "strict").split(" ")
    if len(parts) >= 2 and parts[1] == "UNKNOWN":
        return None
    if len(parts) != 6 or parts[1] not in ("TCP4", "TCP6"):
        raise ProxyHeaderError("bad v1 header")
    src = ipaddress.ip_address(parts[2])
    ipaddress.ip_address(parts[3])
    if (src.version == 4) != (parts[1] == "TCP4"):
        raise ProxyHeaderError("v1 address family mismatch")
    port = int(parts[4])
    if not 0 <= port <= 65535 or not parts[4].isdigit():
        raise ProxyHeaderError("bad v1 port")
    return str(src), port


def _v2(command: int, family: int, body: bytes) -> Address | None:
    if command == 0x0:  # LOCAL: the balancer speaking for itself
        return None
    if command != 0x1:
        raise ProxyHeaderError("bad v2 command")
    if family == 0x11 and len(body) >= 12:  # TCP over IPv4
        src = ipaddress.IPv4Address(body[0:4])
        (port,) = struct.unpack("!H", body[8:10])
        return str(src), port
    if family == 0x21 and len(body) >= 36:  # TCP over IPv6
        src6 = ipaddress.IPv6Address(body[0:16])
        (port,) = struct.unpack("!H", body[32:34])
        return str(src6.ipv4_mapped or src6), port
    if family == 0x00:
        return None
    raise ProxyHeaderError("unsupported v2 address family")


def parse_header(buf: bytes) -> tuple[Address | None, int] | None:
    """``(client address or None for LOCAL/UNKNOWN, header length)``; None when more
    octets are needed; :class:`ProxyHeaderError` when it cannot be a header."""
    if buf.startswith(V2_SIGNATURE[: len(buf)]) and len(buf) < 16:
        return None
    if buf.startswith(V2_SIGNATURE):
        version_command, family = buf[12], buf[13]
        if version_command >> 4 != 2:
            raise ProxyHeaderError("bad v2 version")
        (length,) = struct.unpack("!H", buf[14:16])
        if len(buf) < 16 + length:
            return None
        return _v2(version_command & 0x0F, family, buf[16 : 16 + length]), 16 + length
    if not b"PROXY "[: len(buf)] == buf[:6]:
        raise ProxyHeaderError("no PROXY header")
    end = buf.find(b"\r\n")
    if end < 0:
        if len(buf) >= V1_MAX:
            raise ProxyHeaderError("v1 header too long")
        return None
    try:
        return _v1(buf[:end]), end + 2
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProxyHeaderError(str(exc)) from None


class ProxyFront(asyncio.Protocol):
    """Owns a new connection until its PROXY header is read, then hands the
    transport (TLS-wrapped on implicit-TLS listeners) to the SMTP protocol."""

    def __init__(
        self,
        make_session: Callable[[Address | None], asyncio.Protocol],
        allowed: Networks,
        hostname: str,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.make_session = make_session
        self.allowed = allowed
        self.hostname = hostname
        self.tls = tls
        self.buf = b""
        self.transport: asyncio.Transport | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.done = False

    def connection_made(self, transport: Any) -> None:
        # uvloop's transports are no asyncio.Transport subclasses, but behave as one
        self.transport = transport
        peer = transport.get_extra_info("peername") or ("", 0)
        if str(peer[0]) not in self.allowed:
            log.info("PROXY listener: connection from %s, not a load balancer: refused", peer[0])
            self.done = True
            transport.write(
                f"421 4.7.0 {self.hostname} Error: connections only through the load balancer\r\n".encode()
            )
            transport.close()
            return
        self.timer = asyncio.get_running_loop().call_later(HEADER_TIMEOUT, self._fail, "timeout")

    def _fail(self, why: str) -> None:
        self.done = True
        if self.transport is not None:
            log.info("PROXY header from %s: %s; closed", self._balancer(), why)
            self.transport.close()

    def _balancer(self) -> str:
        peer = self.transport.get_extra_info("peername") if self.transport else None
        return str(peer[0]) if peer else "?"

    def data_received(self, data: bytes) -> None:
        if self.done:
            return
        self.buf += data
        try:
            parsed = parse_header(self.buf)
        except ProxyHeaderError as exc:
            self._fail(str(exc))
            return
        if parsed is None:
            return
        if self.timer is not None:
            self.timer.cancel()
        self.done = True
        client, length = parsed
        rest = self.buf[length:]
        self.buf = b""
        session = self.make_session(client)
        assert self.transport is not None
        if self.tls is None:
            self.transport.set_protocol(session)
            session.connection_made(self.transport)
            if rest:
                session.data_received(rest)
        else:
            asyncio.get_running_loop().create_task(self._start_tls(session, rest))

    async def _start_tls(self, session: asyncio.Protocol, rest: bytes) -> None:
        loop = asyncio.get_running_loop()
        transport = self.transport
        assert transport is not None and self.tls is not None
        upgrade = asyncio.ensure_future(
            loop.start_tls(transport, session, self.tls, server_side=True)
        )
        await asyncio.sleep(0)  # start_tls has queued the TLS layer's connection_made
        if rest:
            loop.call_soon(_feed, transport, rest)  # ... and these octets run after it
        try:
            tls_transport = await upgrade
        except (OSError, ssl.SSLError, ConnectionError) as exc:
            log.info("TLS handshake after PROXY header from %s failed: %r", self._balancer(), exc)
            transport.close()
            return
        if tls_transport is None:
            transport.close()
            return
        session.connection_made(tls_transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()


def _feed(transport: asyncio.Transport, data: bytes) -> None:
    """Hand octets read with the header to the TLS layer now reading the transport."""
    protocol: Any = transport.get_protocol()
    view = memoryview(data)
    while view:
        buf = protocol.get_buffer(len(view))
        n = min(len(buf), len(view))
        buf[:n] = view[:n]
        protocol.buffer_updated(n)
        view = view[n:]
