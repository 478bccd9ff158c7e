"""aiosmtpd sinks that play remote MX hosts, relays and LMTP servers.

A sink records every message it accepts (envelope and body) and can be told to
answer a recipient or the DATA stage with a temporary or permanent error, for a
given number of attempts, to exercise retries and bounces.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
import time
from dataclasses import dataclass, field

from aiosmtpd.controller import Controller
from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP, Envelope, Session

from .dnsserver import free_port

__all__ = ["Received", "SmtpSink"]


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    content: bytes
    at: float = field(default_factory=time.time)
    tls: bool = False  # came over TLS (STARTTLS)


def _sender(mail_from: str | None) -> str:
    """The null sender as "" (aiosmtpd keeps the angle brackets of ``<>``)."""
    return "" if mail_from in (None, "<>") else str(mail_from)


class _LmtpController(Controller):
    def factory(self) -> LMTP:
        return LMTP(self.handler, hostname="sink.test", enable_SMTPUTF8=True)


class _Handler:
    def __init__(self, sink: SmtpSink) -> None:
        self.sink = sink

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # type: ignore[no-untyped-def]
        reply = self.sink._scripted(self.sink.rcpt_replies, address.lower())
        with self.sink._lock:
            self.sink.rcpt_log.append((_sender(envelope.mail_from), address, reply or "250"))
        if self.sink.rcpt_delay:
            await asyncio.sleep(self.sink.rcpt_delay)
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        with self.sink._lock:
            self.sink.data_attempts += 1
        if self.sink.delay:
            await asyncio.sleep(self.sink.delay)
        reply = self.sink._scripted(self.sink.data_replies, "*")
        if reply:
            return reply
        content = envelope.original_content or b""
        with self.sink._lock:
            self.sink.messages.append(
                Received(
                    _sender(envelope.mail_from),
                    list(envelope.rcpt_tos),
                    content,
                    tls=session.ssl is not None,
                )
            )
        if isinstance(server, LMTP):
            return "\r\n".join("250 2.0.0 delivered" for _ in envelope.rcpt_tos)
        return "250 2.0.0 OK: stored"


class SmtpSink:
    """A sink on ``127.0.0.1:<port>``; ``lmtp=True`` speaks LMTP instead; with a
    ``tls_context`` it offers STARTTLS (not required)."""

    def __init__(
        self, port: int | None = None, lmtp: bool = False, tls_context: ssl.SSLContext | None = None
    ) -> None:
        self.port = port or free_port()
        self.messages: list[Received] = []
        self.data_attempts = 0
        self.delay = 0.0  # seconds to think before answering DATA
        self.rcpt_delay = 0.0  # seconds to think before answering RCPT
        # (mail_from, rcpt, reply) for every RCPT TO seen
        self.rcpt_log: list[tuple[str, str, str]] = []
        # key -> list of replies consumed one per attempt (then normal behaviour)
        # or a single string used forever.
        self.rcpt_replies: dict[str, list[str] | str] = {}
        self.data_replies: dict[str, list[str] | str] = {}
        self._lock = threading.Lock()
        handler = _Handler(self)
        if lmtp:
            self.controller = Controller(
                handler,
                hostname="127.0.0.1",
                port=self.port,
                server_hostname="sink.test",
                factory=lambda: LMTP(handler, hostname="sink.test", enable_SMTPUTF8=True),
            )
        else:
            self.controller = Controller(
                handler,
                hostname="127.0.0.1",
                port=self.port,
                server_hostname="sink.test",
                enable_SMTPUTF8=True,
                data_size_limit=64 * 1024 * 1024,
                tls_context=tls_context,
                require_starttls=False,
            )

    def _scripted(self, table: dict[str, list[str] | str], key: str) -> str | None:
        with self._lock:
            entry = table.get(key)
            if entry is None:
                return None
            if isinstance(entry, str):
                return entry
            if not entry:
                return None
            return entry.pop(0)

    def start(self) -> SmtpSink:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()

    def wait_for(self, count: int, timeout: float = 20.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.messages) >= count:
                    return list(self.messages)
            time.sleep(0.05)
        raise AssertionError(f"expected {count} messages, sink has {len(self.messages)}")

    def recipients(self) -> list[str]:
        with self._lock:
            return [r for m in self.messages for r in m.rcpt_tos]
