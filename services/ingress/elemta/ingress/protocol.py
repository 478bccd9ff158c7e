"""The SMTP conversation: aiosmtpd's state machine with Elemta's rules.

:class:`IngressSMTP` subclasses :class:`aiosmtpd.smtp.SMTP` and changes what a
mail transfer agent needs changed:

* DATA is read in bulk up to ``<CRLF>.<CRLF>`` (never ``<LF>.<LF>`` or
  ``<CR>.<CR>``) and then checked as a whole: bare CR or LF (``550 5.6.11``), size
  (``552 5.3.4``), line length (``500 5.5.2``), and dot-unstuffed.
* Every reply carries an RFC 2034 enhanced status code, aiosmtpd's own included
  (the greeting, the HELO/EHLO answer and 354 excepted, as RFC 2034 says).
* EHLO advertises PIPELINING, SIZE, STARTTLS, ENHANCEDSTATUSCODES, 8BITMIME and
  SMTPUTF8; AUTH is not offered.
* Relay control and the recipient limit at RCPT; idle and DATA timeouts answer
  ``421 4.4.2`` before closing; a draining server says ``421 4.3.2`` to sessions
  without an open transaction.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import ssl
import time
from dataclasses import dataclass
from email._header_value_parser import get_addr_spec, get_angle_addr
from email.errors import HeaderParseError
from typing import Any, Protocol

from aiosmtpd.smtp import SMTP, Envelope, Session, TLSSetupException, syntax

from . import metrics
from .data import check_data, read_data
from .received import clean_text
from .relay import RelayControl, split_address
from .replies import SHUTDOWN, TOO_BIG, with_enhanced_code
from .stages import Client, StageChecks
from .transaction import MessageProcessor, Transaction

__all__ = ["IngressSMTP", "SessionHost", "Settings"]

log = logging.getLogger(__name__)


def _utf8(text: str) -> bool:
    """False when ``text`` holds octets that were not UTF-8 (surrogate escapes)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@dataclass
class Settings:
    hostname: str
    max_message_size: int
    max_recipients: int
    max_line_length: int
    command_timeout: float
    data_timeout: float
    processing_timeout: float
    tls_context: ssl.SSLContext | None
    relay: RelayControl
    processor: MessageProcessor
    stages: StageChecks


class SessionHost(Protocol):
    """What a session needs from the server that runs it."""

    draining: bool

    def session_opened(self, session: IngressSMTP) -> None: ...
    def session_closed(self, session: IngressSMTP) -> None: ...
    def track(self, task: asyncio.Task[str]) -> None: ...


class _Hooks:
    """aiosmtpd handler hooks, forwarded to the session that calls them."""

    async def handle_MAIL(  # noqa: N802
        self,
        server: IngressSMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        options: list[str],
    ) -> str:
        reply = server.on_mail(envelope, address, options)
        if reply.startswith("250"):
            refusal = await server.check_mail(address)
            if refusal:
                envelope.mail_from = None
                envelope.mail_options.clear()
                return refusal
        return reply

    async def handle_RCPT(  # noqa: N802
        self,
        server: IngressSMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        options: list[str],
    ) -> str:
        known = len(envelope.rcpt_tos)
        reply = server.on_rcpt(envelope, address, options)
        if reply.startswith("250") and len(envelope.rcpt_tos) > known:
            refusal = await server.check_rcpt(envelope.mail_from or "", envelope.rcpt_tos[-1])
            if refusal:
                envelope.rcpt_tos.pop()
                del envelope.rcpt_options[len(envelope.rcpt_options) - len(options) :]
                return refusal
        return reply


_HOOKS = _Hooks()


class IngressSMTP(SMTP):
    def __init__(
        self, settings: Settings, host: SessionHost, loop: asyncio.AbstractEventLoop
    ) -> None:
        self.settings = settings
        self.host = host
        self._greeted = False
        self._processing = False
        self._registered = False
        self._connect_checked = False
        super().__init__(
            _HOOKS,
            data_size_limit=settings.max_message_size,
            enable_SMTPUTF8=True,
            decode_data=False,
            hostname=settings.hostname,
            ident="ESMTP Elemta",
            tls_context=settings.tls_context,
            timeout=settings.command_timeout,
            auth_exclude_mechanism=["LOGIN", "PLAIN"],
            loop=loop,
        )
        # aiosmtpd keeps these limits in one class-wide dict; keep ours per session.
        # MAIL may carry SIZE=, BODY=8BITMIME and SMTPUTF8 (RFC 1870, 6152, 6531).
        self.command_size_limits = collections.defaultdict(lambda: SMTP.command_size_limit)
        self.command_size_limits["MAIL"] = SMTP.command_size_limit + 26 + 14 + 10
        # Raw DATA may be larger than the message: dot-stuffing adds up to a third.
        self._data_limit = settings.max_message_size + settings.max_message_size // 3 + 1024

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        """aiosmtpd's address parser without its per-call class definition.

        The original defines a ``typing.Protocol`` class on every MAIL and RCPT,
        which costs more than the parsing itself.
        """
        if not arg:
            return "", ""
        address: Any
        try:
            if arg.lstrip().startswith("<"):
                address, rest = get_angle_addr(arg)
            else:
                address, rest = get_addr_spec(arg)
        except HeaderParseError:
            return None, None
        addr = address.addr_spec
        localpart, atsign, domainpart = addr.rpartition("@")
        if self.local_part_limit and len(localpart) > self.local_part_limit:
            return None, None
        return addr, rest

    # -- connection life cycle -------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        first = self.transport is None
        super().connection_made(transport)
        if first and not self._registered:
            self._registered = True
            self.host.session_opened(self)

    def connection_lost(self, error: Exception | None) -> None:
        try:
            super().connection_lost(error)
        finally:
            if self._registered:
                self._registered = False
                self.host.session_closed(self)

    @property
    def peer(self) -> tuple[str, int]:
        peer = self.session.peer if self.session is not None else None
        if isinstance(peer, tuple) and len(peer) >= 2:
            return str(peer[0]), int(peer[1])
        return "", 0

    @property
    def in_transaction(self) -> bool:
        """A mail transaction is open (MAIL given) or its message is being handled."""
        env = self.envelope
        return self._processing or (env is not None and env.mail_from is not None)

    @property
    def processing(self) -> bool:
        return self._processing

    def goodbye(self, reply: str = SHUTDOWN) -> None:
        """Say ``reply`` (a 421) and close; the transport flushes it first."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        metrics.count_reply(reply[:3])
        self._writer.write(reply.encode() + b"\r\n")
        transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()  # type: ignore[attr-defined]

    def _timeout_cb(self) -> None:
        log.info("timeout after %s from %s", "DATA" if self._in_data else "command", self.peer[0])
        self.goodbye(f"421 4.4.2 {self.hostname} Error: timeout exceeded")

    # -- replies -----------------------------------------------------------------

    _in_data = False

    async def push(self, status: Any) -> None:
        text = status.decode("utf-8", "replace") if isinstance(status, bytes) else str(status)
        if self._greeted:
            text = with_enhanced_code(text)
        self._greeted = True
        await self._send([text])

    async def _send(self, lines: list[str]) -> None:
        """Write one reply (one or more lines) and do what follows a reply."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        last = lines[-1]
        metrics.count_reply(last[:3])
        self._writer.write("".join(f"{line}\r\n" for line in lines).encode("utf-8", "replace"))
        await self._writer.drain()
        if last[:1] == "3":
            return  # an intermediate reply: the same command goes on
        if last[:3] == "421":  # we said goodbye: the connection ends here
            transport.close()
        elif self.host.draining and not self.in_transaction:
            self.goodbye(SHUTDOWN)
        elif not self._in_data:
            self._reset_timeout()  # the idle time counts from our last reply

    async def handle_exception(self, error: Exception) -> str:
        if isinstance(error, TLSSetupException):
            log.info("TLS handshake failed with %s: %r", self.peer[0], error.__cause__)
            return "454 4.7.0 TLS handshake failed"
        log.exception("session error with %s", self.peer[0])
        return "451 4.3.0 Error: internal error, try again later"

    # -- commands ----------------------------------------------------------------

    @syntax("HELO hostname")
    async def smtp_HELO(self, hostname: str) -> None:  # noqa: N802
        if not hostname:
            await self.push("501 5.5.4 Syntax: HELO hostname")
            return
        self._set_rset_state()
        assert self.session is not None
        self.session.extended_smtp = False
        self.session.host_name = hostname
        await self._send([f"250 {self.hostname}"])

    @syntax("EHLO hostname")
    async def smtp_EHLO(self, hostname: str) -> None:  # noqa: N802
        if not hostname:
            await self.push("501 5.5.4 Syntax: EHLO hostname")
            return
        self._set_rset_state()
        assert self.session is not None
        self.session.extended_smtp = True
        self.session.host_name = hostname
        keywords = [self.hostname, "PIPELINING", f"SIZE {self.settings.max_message_size}"]
        if self.tls_context is not None and self._tls_protocol is None:
            keywords.append("STARTTLS")
        keywords += ["ENHANCEDSTATUSCODES", "8BITMIME", "SMTPUTF8"]
        last = len(keywords) - 1
        await self._send([f"250{' ' if i == last else '-'}{k}" for i, k in enumerate(keywords)])

    async def smtp_AUTH(self, arg: str) -> None:  # noqa: N802
        await self.push("503 5.5.1 Error: authentication not enabled")

    @syntax("STARTTLS", when="tls_context")
    async def smtp_STARTTLS(self, arg: str) -> None:  # noqa: N802
        if self._tls_protocol is not None:
            await self.push("554 5.5.1 Error: TLS already active")
            return
        if arg:
            await self.push("501 5.5.4 Syntax: STARTTLS")
            return
        # Anything the client sent after STARTTLS, before the handshake, is
        # plaintext that must never be read as a command inside TLS (RFC 3207
        # section 4.2, CVE-2011-0411). aiosmtpd clears the reader's buffer when
        # the TLS layer comes up; make sure of it here as well.
        buffered = len(self._reader._buffer)  # type: ignore[attr-defined]
        await super().smtp_STARTTLS(arg)
        self._reader._buffer.clear()  # type: ignore[attr-defined]
        if buffered:
            log.warning(
                "discarded %d bytes pipelined after STARTTLS from %s", buffered, self.peer[0]
            )

    # -- MAIL and RCPT (hooks) -----------------------------------------------------

    def on_mail(self, envelope: Envelope, address: str, options: list[str]) -> str:
        if self.host.draining:
            return SHUTDOWN
        if address != "<>" and (not _utf8(address) or split_address(address) is None):
            return f"501 5.1.7 <{clean_text(address)}>: Bad sender address syntax"
        if not address.isascii() and not envelope.smtp_utf8:
            return "553 5.6.7 Must declare SMTPUTF8 to send UTF8 mail"
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 2.1.0 Ok"

    def _client(self) -> Client:
        helo = clean_text(self.session.host_name or "") if self.session is not None else ""
        ip, port = self.peer
        tls = self._tls_protocol is not None
        return Client(ip, port, helo, tls, connect_checked=self._connect_checked)

    async def check_mail(self, address: str) -> str | None:
        """Policy on the sender (and, once per session, on the client)."""
        client = self._client()
        refusal = await self.settings.stages.mail(client, "" if address == "<>" else address)
        self._connect_checked = client.connect_checked
        if refusal:
            self._log_reject("MAIL", refusal, None)
        return refusal

    async def check_rcpt(self, sender: str, rcpt: str) -> str | None:
        refusal = await self.settings.stages.rcpt(
            self._client(), "" if sender == "<>" else sender, rcpt
        )
        if refusal:
            self._log_reject("RCPT", refusal, None, to=rcpt)
        return refusal

    def on_rcpt(self, envelope: Envelope, address: str, options: list[str]) -> str:
        if len(envelope.rcpt_tos) >= self.settings.max_recipients:
            return "452 4.5.3 Too many recipients"
        relay = self.settings.relay
        rcpt = relay.normalize(address) if _utf8(address) else None
        if rcpt is None:
            reply = f"501 5.1.3 <{clean_text(address)}>: Bad recipient address syntax"
        elif not rcpt.isascii() and not envelope.smtp_utf8:
            reply = "553 5.6.7 Must declare SMTPUTF8 to send UTF8 mail"
        else:
            reply = relay.check(self.peer[0], rcpt) or ""
        if reply:
            self._log_reject("RCPT", reply, envelope, to=clean_text(address))
            return reply
        assert rcpt is not None
        if rcpt not in envelope.rcpt_tos:
            envelope.rcpt_tos.append(rcpt)
            envelope.rcpt_options.extend(options)
        return "250 2.1.5 Ok"

    def _log_reject(self, stage: str, reply: str, envelope: Envelope | None, to: str = "") -> None:
        helo = clean_text(self.session.host_name or "") if self.session is not None else ""
        sender = (envelope.mail_from or "") if envelope is not None else ""
        log.info(
            "reject: %s from unknown[%s]: %s; from=<%s>%s helo=<%s>",
            stage,
            self.peer[0],
            reply,
            "" if sender == "<>" else sender,
            f" to=<{to}>" if to else "",
            helo or "",
            extra={"reply": reply, "client_ip": self.peer[0], "stage": stage},
        )

    # -- DATA ----------------------------------------------------------------------

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:  # noqa: N802
        if await self.check_helo_needed():
            return
        assert self.envelope is not None and self.session is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 5.5.1 Error: need RCPT command")
            return
        if arg:
            await self.push("501 5.5.4 Syntax: DATA")
            return
        refusal = self.settings.processor.precheck()
        if refusal:
            metrics.MESSAGES.labels("tempfail").inc()
            self._log_reject("DATA", refusal, self.envelope)
            self._set_post_data_state()
            await self.push(refusal)
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        self._in_data = True
        self._reset_timeout(self.settings.data_timeout)
        try:
            raw = await read_data(self._reader, self._data_limit)
        except asyncio.IncompleteReadError:  # the client went away mid-DATA
            if self.transport is not None:
                self.transport.close()
            return
        finally:
            self._in_data = False
        ended = time.perf_counter()
        envelope = self.envelope
        self._processing = True
        try:
            reply = await self._finish(raw, envelope, ended)
        finally:
            self._processing = False
            self._set_post_data_state()
        await self.push(reply)

    async def _finish(self, raw: bytes | None, envelope: Envelope, ended: float) -> str:
        """Check the received data and hand the message on; return the reply."""
        if raw is None:
            content, reply = b"", TOO_BIG
        else:
            content, reply = check_data(
                raw, self.settings.max_message_size, self.settings.max_line_length
            )
        if reply:
            metrics.MESSAGES.labels("rejected").inc()
            self._log_reject("DATA", reply, envelope)
            return reply
        envelope.content = envelope.original_content = content
        assert self.session is not None and envelope.mail_from is not None
        ip, port = self.peer
        tx = Transaction(
            helo=clean_text(self.session.host_name or ""),
            client_ip=ip,
            client_port=port,
            esmtp=self.session.extended_smtp,
            tls=self._tls_protocol is not None,
            sender="" if envelope.mail_from == "<>" else envelope.mail_from,
            recipients=list(envelope.rcpt_tos),
            smtputf8=bool(envelope.smtp_utf8),
            body_8bit="BODY=8BITMIME" in envelope.mail_options,
            data_ended=ended,
        )
        # The client waits for us now; only a safety net of a timeout applies.
        self._reset_timeout(self.settings.processing_timeout)
        # Once the message is ours to handle, finish handling it even if the
        # client goes away: no half-stored message, no orphaned body.
        task = asyncio.get_running_loop().create_task(self.settings.processor.process(tx, content))
        self.host.track(task)
        return await asyncio.shield(task)
