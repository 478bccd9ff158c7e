"""Helpers for the ingress tests: an in-process ingress, JetStream reads, raw SMTP.

The ingress runs on its own event loop in a background thread, so that the tests
themselves can use blocking clients (``smtplib``, sockets) as real clients do.
"""

from __future__ import annotations

import asyncio
import re
import smtplib
import socket
import ssl
import threading
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
from nats.js.errors import NotFoundError

from elemta.common.config import Config
from elemta.common.envelope import Envelope
from elemta.common.health import HealthServer
from elemta.common.jetstream import (
    BODIES_BUCKET,
    ENVELOPE_HEADER,
    MESSAGES_STREAM,
    MSG_SUBJECT,
    ensure_streams,
)
from elemta.ingress.service import IngressService

__all__ = [
    "MESSAGE",
    "CoalescingTLSClient",
    "IngressRunner",
    "RawSMTP",
    "Stored",
    "body_object",
    "create_streams",
    "make_config",
    "message_count",
    "queue_id_of",
    "send",
    "stored",
    "wait_until",
]


MESSAGE = "From: a@client.test\r\nTo: b@local.test\r\nSubject: hello\r\n\r\nHello.\r\n"


def queue_id_of(reply: bytes) -> str:
    m = re.search(rb"queued as (\w+)", reply)
    assert m, reply
    return m.group(1).decode()


def send(port: int, body: str = MESSAGE) -> tuple[int, bytes]:
    """One transaction; the reply to DATA (to the command, or to the end of data)."""
    with smtplib.SMTP("127.0.0.1", port, local_hostname="client.test", timeout=15) as s:
        s.ehlo()
        assert s.mail("a@client.test")[0] == 250
        assert s.rcpt("b@local.test")[0] == 250
        try:
            return s.data(body)
        except smtplib.SMTPDataError as exc:
            return exc.smtp_code, exc.smtp_error


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def make_config(
    workdir: Path, nats_url: str, policy_address: str, overrides: dict[str, Any] | None = None
) -> Config:
    data: dict[str, Any] = {
        "server": {
            "hostname": "mx.elemta.test",
            "local_domains": ["local.test"],
            "trusted_networks": ["127.0.0.0/8"],
            "state_dir": str(workdir / "var"),
        },
        "nats": {"url": nats_url, "publish_timeout": 2.0},
        "ingress": {
            "listen": "127.0.0.1:0",
            "http_listen": "127.0.0.1:0",
            "max_message_size": 64 * 1024,
            "max_recipients": 5,
            "command_timeout": 30.0,
            "data_timeout": 30.0,
            "policy_timeout": 3.0,
            "drain_timeout": 5.0,
            "listeners": [],  # the submission ports' fixed defaults are not for tests
            # the scripted policy answers for loopback clients too
            "trusted_policy": "always",
        },
        "policy": {"address": policy_address},
        "telemetry": {"log_format": "text"},
    }
    return Config.model_validate(_merge(data, overrides or {}))


def wait_until(predicate: Any, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class IngressRunner:
    """An :class:`IngressService` on a background event loop."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.service: IngressService | None = None
        self.health: HealthServer | None = None
        self.stop_event: asyncio.Event | None = None

    def call(self, coro: Coroutine[Any, Any, Any], timeout: float = 30.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self, wait_stream: bool = True) -> IngressRunner:
        self.thread.start()

        async def start() -> None:
            self.stop_event = asyncio.Event()
            self.health = HealthServer("127.0.0.1:0")
            await self.health.start()
            self.service = IngressService(self.cfg, self.health, self.stop_event)
            await self.service.start()

        self.call(start())
        if wait_stream:
            wait_until(lambda: self.svc.handoff.stream_ready, what="stream readiness")
        return self

    @property
    def svc(self) -> IngressService:
        assert self.service is not None
        return self.service

    @property
    def port(self) -> int:
        return self.svc.port

    def failing(self) -> list[str]:
        assert self.health is not None
        return self.health.failing()

    def stop(self) -> None:
        if not self.thread.is_alive():
            return

        async def stop() -> None:
            assert self.stop_event is not None and self.health is not None
            self.stop_event.set()
            await self.svc.stop()
            await self.health.stop()

        try:
            self.call(stop(), timeout=60)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()


def _run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(coro)


def create_streams(nats_url: str, cfg: Config) -> None:
    """Play the queue service's part: create the streams and buckets."""

    async def go() -> None:
        nc = await nats.connect(nats_url)
        try:
            await ensure_streams(nc.jetstream(), cfg)
        finally:
            await nc.close()

    _run(go())


@dataclass
class Stored:
    seq: int
    subject: str
    headers: dict[str, str]
    data: bytes

    @property
    def envelope(self) -> Envelope:
        return Envelope.from_header(self.headers[ENVELOPE_HEADER])


def stored(nats_url: str, queue_id: str) -> Stored | None:
    """The message stored under ``queue_id`` (of any priority class), or None."""

    async def go() -> Stored | None:
        nc = await nats.connect(nats_url)
        try:
            js = nc.jetstream()
            try:
                m = await js.get_last_msg(MESSAGES_STREAM, f"{MSG_SUBJECT}.{queue_id}")
            except NotFoundError:
                try:
                    m = await js.get_last_msg(MESSAGES_STREAM, f"elemta.*.msg.{queue_id}")
                except NotFoundError:
                    return None
            return Stored(int(m.seq or 0), str(m.subject), dict(m.headers or {}), m.data or b"")
        finally:
            await nc.close()

    result: Stored | None = _run(go())
    return result


def message_count(nats_url: str) -> int:
    async def go() -> int:
        nc = await nats.connect(nats_url)
        try:
            info = await nc.jetstream().stream_info(MESSAGES_STREAM)
            return int(info.state.messages)
        finally:
            await nc.close()

    count: int = _run(go())
    return count


def body_object(nats_url: str, name: str) -> bytes | None:
    async def go() -> bytes | None:
        nc = await nats.connect(nats_url)
        try:
            obs = await nc.jetstream().object_store(BODIES_BUCKET)
            try:
                res = await obs.get(name)
            except NotFoundError:
                return None
            return bytes(res.data or b"")
        finally:
            await nc.close()

    data: bytes | None = _run(go())
    return data


class RawSMTP:
    """A client that writes exactly the bytes it is given, for pipelining and smuggling."""

    def __init__(self, port: int, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.file = self.sock.makefile("rb")

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def reply(self) -> bytes:
        """One whole reply (all its lines)."""
        out = b""
        while True:
            line = self.file.readline()
            if not line:
                raise ConnectionError(f"connection closed after {out!r}")
            out += line
            if line[3:4] != b"-":
                return out

    def cmd(self, line: bytes) -> bytes:
        self.send(line + b"\r\n")
        return self.reply()

    def closed(self) -> bool:
        """True when the server has closed the connection (EOF)."""
        return self.file.read() == b""

    def close(self) -> None:
        self.file.close()
        self.sock.close()

    def __enter__(self) -> RawSMTP:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class CoalescingTLSClient:
    """A TLS client over ``ssl.MemoryBIO`` that decides how its bytes are cut into writes.

    Like a fast client library, it can send its handshake ``Finished`` and its first
    command in one TCP write.
    """

    def __init__(self, sock: socket.socket) -> None:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        self.sock = sock
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.tls = ctx.wrap_bio(self.incoming, self.outgoing, server_hostname="mx.elemta.test")

    def _receive(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("server closed the connection")
        self.incoming.write(data)

    def handshake_then(self, first: bytes) -> None:
        """Complete the handshake and send ``first`` in the same write as ``Finished``."""
        while True:
            try:
                self.tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                pending = self.outgoing.read()
                if pending:
                    self.sock.sendall(pending)
                self._receive()
        self.tls.write(first)
        self.sock.sendall(self.outgoing.read())  # Finished + the command: one write

    def reply(self) -> bytes:
        out = b""
        while True:
            try:
                data = self.tls.read(65536)
            except ssl.SSLWantReadError:
                self._receive()
                continue
            if not data:  # close_notify
                raise ConnectionError(f"TLS closed after {out!r}")
            out += data
            lines = out.split(b"\r\n")
            if len(lines) > 1 and lines[-2][3:4] == b" ":
                return out
