"""The SMTP conversation: aiosmtpd's state machine with Elemta's rules.

:class:`IngressSMTP` subclasses :class:`aiosmtpd.smtp.SMTP` and changes what a
mail transfer agent needs changed:

* MAIL, RCPT, VRFY and RSET are Elemta's own (``arguments`` reads the addresses
  and parameters): a malformed address is a permanent ``501``, never an exception.
* DATA is read in bulk up to ``<CRLF>.<CRLF>`` (never ``<LF>.<LF>`` or
  ``<CR>.<CR>``) and then checked as a whole: bare CR or LF (``550 5.6.11``), size
  (``552 5.3.4``), line length (``500 5.5.2``), and dot-unstuffed.
* Every reply carries an RFC 2034 enhanced status code, aiosmtpd's own included
  (the greeting, the HELO/EHLO answer and 354 excepted, as RFC 2034 says), and
  is printable ASCII: client bytes are never sent back raw.
* EHLO advertises PIPELINING, SIZE, STARTTLS, ENHANCEDSTATUSCODES, 8BITMIME,
  SMTPUTF8, DSN (its parameters are read in ``dsnparams``) and, with priorities on,
  MT-PRIORITY (honoured from authenticated and trusted clients, see
  ``elemta.common.priority``); ``AUTH PLAIN LOGIN``
  only inside TLS on listeners that offer it (:mod:`.smtpauth`). Submission
  listeners require AUTH before MAIL; an authenticated client may relay, as the
  owner of its envelope sender.
* AUTH, BDAT, MAIL and RCPT are commands of their own modules, mixed in ahead
  of aiosmtpd's ``SMTP`` (:class:`.smtpauth.AuthCommands`,
  :class:`.chunking.ChunkingCommands`, :class:`.envelopecommands.EnvelopeCommands`,
  :class:`.messagecommands.MessageCommands`: DATA and the end of every
  transaction); this module keeps the dialogue's spine: the connection,
  HELO/EHLO, RSET, VRFY, STARTTLS, replies and timers.
* Relay control and the recipient limit at RCPT; idle and DATA timeouts answer
  ``421 4.4.2`` before closing; so do 20 errors in a session (``421 4.7.0``,
  Postfix's ``smtpd_hard_error_limit``); a draining server says ``421 4.3.2``
  to sessions without an open transaction.

What is still taken from aiosmtpd's insides, and why (``tests/ingress/
test_ingress_aiosmtpd.py`` pins each against the aiosmtpd version in use):

* ``self._reader``: aiosmtpd offers no public access to the connection's
  stream; DATA is read in bulk from it.
* aiosmtpd's ``connection_made`` after the TLS handshake clears plaintext the
  client pipelined after STARTTLS (RFC 3207 section 4.2) and starts a new
  ``Session`` with ``session.ssl`` set; nothing here touches the buffer itself,
  so the first command sent inside TLS is never lost.
* aiosmtpd's command loop answers unknown, empty and over-long commands through
  :meth:`push`, where they get their enhanced code and are made printable.
* A ``TLSSetupException`` raised from a command makes aiosmtpd close the
  transport and end the session: STARTTLS raises it when the connection was
  closed mid-handshake, which asyncio does not report as a lost connection.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, TLSSetupException, syntax

from . import metrics
from .chunking import ChunkingCommands
from .clientname import UNKNOWN, confirmed_name
from .dsnparams import DsnRequest
from .envelopecommands import EnvelopeCommands
from .limits import ClientLimits
from .messagecommands import MessageCommands
from .replies import SHUTDOWN, with_enhanced_code
from .sessioninit import BoundCommands
from .sessioninit import install as find_session_methods_once
from .sessionparts import SessionHost, Settings
from .smtpauth import MECHANISMS, AuthCommands, AuthUser
from .text import PrintableLogs, clean_text, reply_line

__all__ = ["IngressSMTP"]

log = logging.getLogger(__name__)
# aiosmtpd logs an unknown command as the client sent it.
logging.getLogger("mail.log").addFilter(PrintableLogs())
# aiosmtpd looks up its command and AUTH methods for every connection; once per class
# is enough (see .sessioninit).
find_session_methods_once()

# Postfix's smtpd_hard_error_limit: a session that earns this many 4xx/5xx
# replies is told 421 and closed.
MAX_ERRORS = 20
# aiosmtpd's own idle timer closes without a word and counts only valid
# commands; ours answers 421 4.4.2 and counts from the last reply, so aiosmtpd's
# is set beyond any session (a backstop only).
AIOSMTPD_TIMEOUT = 86400.0


def _is_loopback(ip: str) -> bool:
    """The addresses :func:`.clientname.confirmed_name` answers ``unknown`` for at once."""
    return ip.startswith("127.") or ip == "::1"


class _NoHooks:
    """aiosmtpd calls handler hooks; every command Elemta changes is its own method."""


def _give_back(taking: asyncio.Future[str | None], limits: ClientLimits, ip: str) -> None:
    """Once a slot taken for a session that has already ended is granted, free it."""
    if not taking.cancelled() and taking.exception() is None and taking.result() is None:
        limits.disconnect(ip)


class IngressSMTP(AuthCommands, ChunkingCommands, EnvelopeCommands, MessageCommands, SMTP):
    # AUTH, BDAT, MAIL, RCPT and DATA come from the mixins, which must stay ahead of SMTP:
    # aiosmtpd has commands of the same names, and dispatches to whichever getattr
    # finds first.
    # Commands are bound when used (.sessioninit.LAZY, .sessioninit.BoundCommands).
    _commands_bound_when_used = True

    def __init__(
        self,
        settings: Settings,
        host: SessionHost,
        loop: asyncio.AbstractEventLoop,
        proxied: tuple[str, int] | None = None,
    ) -> None:
        self.settings = settings
        self._proxied = proxied  # the client a PROXY header named (.proxyproto)
        self._counted = False  # holds a connection slot of the client limits
        self._lost = False  # the connection has ended
        self._name: asyncio.Task[str] | None = None  # the client's FCrDNS name
        self.host = host
        self._greeted = False
        self._processing = False
        self._registered = False
        self._connect_checked = False
        self._in_data = False
        self._errors = 0
        self._chunks: bytearray | None = None  # BDAT chunks of the open transaction (.chunking)
        self._chunks_too_big = False
        self._auth_failures = 0  # failed AUTH in this session (.smtpauth)
        self.user: AuthUser | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._peer_from: object = None  # the session.peer that self._peer was read from
        self._peer: tuple[str, int] = ("", 0)
        self._timer_at = 0.0  # when the timer fires
        self._deadline = 0.0  # when the session times out (the timer may fire earlier)
        self._backstop = 0.0  # aiosmtpd's timeout, see _reset_timeout
        super().__init__(
            _NoHooks(),
            data_size_limit=settings.max_message_size,
            enable_SMTPUTF8=True,
            decode_data=False,
            hostname=settings.hostname,
            ident="ESMTP Elemta",
            tls_context=settings.tls_context,
            timeout=AIOSMTPD_TIMEOUT,
            auth_exclude_mechanism=["LOGIN", "PLAIN"],
            loop=loop,
        )
        self._smtp_methods = BoundCommands(self)  # type: ignore[assignment]
        # aiosmtpd keeps these limits in one class-wide dict; keep ours per session.
        # MAIL may carry SIZE=, BODY=8BITMIME and SMTPUTF8 (RFC 1870, 6152, 6531).
        self.command_size_limits = collections.defaultdict(lambda: SMTP.command_size_limit)
        # DSN (RFC 3461 section 5) adds 110 characters to MAIL (RET, ENVID) and
        # 500 to RCPT (NOTIFY, ORCPT); MT-PRIORITY (RFC 6710 section 3) 16 to MAIL.
        self.command_size_limits["MAIL"] = SMTP.command_size_limit + 26 + 14 + 10 + 110 + 16
        self.command_size_limits["RCPT"] = SMTP.command_size_limit + 500
        self.dsn = DsnRequest()
        self._mt_priority: int | None = None  # MT-PRIORITY of the open transaction
        # Raw DATA may be larger than the message: dot-stuffing adds up to a third.
        self._data_limit = settings.max_message_size + settings.max_message_size // 3 + 1024

    # -- connection life cycle -------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        first = self.transport is None
        super().connection_made(transport)
        if self._proxied is not None and self.session is not None:
            self.session.peer = self._proxied  # type: ignore[assignment]  # after STARTTLS too
        ip = self.peer[0]
        if self._name is None and self.settings.resolver is not None and ip:
            if not _is_loopback(ip):  # never looked up (.clientname): no task to run
                self._name = self.loop.create_task(confirmed_name(self.settings.resolver, ip))
        sslobj = transport.get_extra_info("ssl_object")
        if sslobj is not None and self.settings.tls is not None:
            self.settings.tls.handshake_done(sslobj)
        if first and not self._registered:
            self._registered = True
            self._arm(self.settings.command_timeout)
            self.host.session_opened(self)

    def connection_lost(self, error: Exception | None) -> None:
        self._lost = True
        if self._timer is not None:
            self._timer.cancel()
        if self._counted and self.settings.limits is not None:
            self._counted = False
            self.settings.limits.disconnect(self.peer[0])
        if self._name is not None and not self._name.done():
            self._name.cancel()
        try:
            super().connection_lost(error)
        finally:
            if self._registered:
                self._registered = False
                self.host.session_closed(self)

    @property
    def peer(self) -> tuple[str, int]:
        peer = self.session.peer if self.session is not None else None
        if peer is not self._peer_from:  # read once per session.peer
            self._peer_from = peer
            if isinstance(peer, tuple) and len(peer) >= 2:
                self._peer = str(peer[0]), int(peer[1])
            else:
                self._peer = "", 0
        return self._peer

    @property
    def tls(self) -> bool:
        """TLS is up: an implicit-TLS listener, or aiosmtpd set ``session.ssl`` once
        the STARTTLS handshake was done."""
        if self.settings.implicit_tls:
            return True
        return self.session is not None and self.session.ssl is not None

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
        transport.write(reply_line(reply).encode("ascii") + b"\r\n")  # type: ignore[attr-defined]
        transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()  # type: ignore[attr-defined]

    def _arm(self, seconds: float) -> None:
        """(Re)start the idle timer: ``seconds`` from now the session times out.

        Called after every reply, so it only moves the deadline; the one timer
        of the session is replaced only when the deadline comes earlier, and
        when it fires before a deadline moved later it waits again.
        """
        deadline = self.loop.time() + seconds
        self._deadline = deadline
        if self._timer is None or deadline < self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
            self._timer_at = deadline
            self._timer = self.loop.call_at(deadline, self._timer_fired)

    def _timer_fired(self) -> None:
        self._timer = None
        if self.loop.time() < self._deadline:
            self._timer_at = self._deadline
            self._timer = self.loop.call_at(self._deadline, self._timer_fired)
            return
        self._timed_out()

    def _reset_timeout(self, duration: float | None = None) -> None:
        """aiosmtpd's own timer (a backstop, :data:`AIOSMTPD_TIMEOUT`) is reset for
        every command; it is armed once, and :meth:`_timeout_cb` looks again when it
        fires."""
        self._backstop = self.loop.time() + (duration or self._timeout_duration)
        if self._timeout_handle is None:
            self._timeout_handle = self.loop.call_at(self._backstop, self._timeout_cb)

    def _timeout_cb(self) -> None:
        if self.loop.time() < self._backstop:
            self._timeout_handle = self.loop.call_at(self._backstop, self._timeout_cb)
            return
        super()._timeout_cb()  # type: ignore[no-untyped-call]

    def _timed_out(self) -> None:
        log.info("timeout after %s from %s", "DATA" if self._in_data else "command", self.peer[0])
        self.goodbye(f"421 4.4.2 {self.hostname} Error: timeout exceeded")

    def _new_transaction(self) -> None:
        self.envelope = Envelope()
        self.dsn = DsnRequest()
        self._mt_priority = None
        self._chunks = None

    # -- replies -----------------------------------------------------------------

    async def push(self, status: Any) -> None:
        text = status.decode("utf-8", "replace") if isinstance(status, bytes) else str(status)
        if not self._greeted and self.settings.limits is not None:
            await self._admit()
        if self._greeted:
            text = with_enhanced_code(text)
        self._greeted = True
        await self._send([text])

    async def client_name(self) -> str:
        """The client's forward-confirmed name (:mod:`.clientname`), or ``unknown``."""
        if self._name is None:
            return UNKNOWN
        if self._name.done():  # most often by the end of DATA: no waiting to set up
            if self._name.cancelled() or self._name.exception() is not None:
                return UNKNOWN
            return self._name.result()
        try:
            return await asyncio.wait_for(
                asyncio.shield(self._name), self.settings.client_name_timeout
            )
        except (TimeoutError, asyncio.CancelledError):
            return UNKNOWN

    async def _admit(self) -> None:
        """Before the greeting: the client limits (a slot held until the connection
        ends), or 421 and the end of the session."""
        limits = self.settings.limits
        assert limits is not None
        ip = self.peer[0]
        # The slot is taken in a task of its own: a client gone while it is taken
        # (the session cancelled meanwhile) must still give it back, or every such
        # client would hold a slot for as long as the process runs.
        taking = asyncio.ensure_future(limits.connect(ip))
        try:
            refusal = await asyncio.shield(taking)
        except asyncio.CancelledError:
            taking.add_done_callback(lambda t: _give_back(t, limits, ip))
            raise
        if refusal is None:
            if self._lost:
                limits.disconnect(ip)
                raise asyncio.CancelledError()
            self._counted = True
            return
        self._greeted = True
        self.goodbye(refusal)
        raise asyncio.CancelledError()  # aiosmtpd's session loop ends here

    async def _send(self, lines: list[str]) -> None:
        """Write one reply (one or more lines) and do what follows a reply.

        Once the connection is closing, nothing more is read: aiosmtpd's command
        loop goes on over what the client had pipelined after its own goodbye
        and would close the transport again, which breaks a TLS transport's
        next read (``AttributeError`` in asyncio's sslproto). Raising
        CancelledError here ends the loop the way a lost connection does.
        """
        transport = self.transport
        if transport is None or transport.is_closing():
            raise asyncio.CancelledError()
        last = lines[-1]
        metrics.count_reply(last[:3])
        if len(lines) == 1:
            payload = reply_line(last).encode("ascii") + b"\r\n"
        else:
            payload = "".join(reply_line(line) + "\r\n" for line in lines).encode("ascii")
        # What aiosmtpd's push does, less its debug log of every reply.
        self._writer.write(payload)
        await self._writer.drain()
        if last[:1] == "3":
            return  # an intermediate reply: the same command goes on
        if last[:3] == "421":  # we said goodbye: the connection ends here
            transport.close()
        elif last[:1] in ("4", "5") and self._count_error():
            return
        elif self.host.draining and not self.in_transaction:
            self.goodbye(SHUTDOWN)
        elif not self._in_data:
            self._arm(self.settings.command_timeout)  # idle time counts from our last reply

    def _count_error(self) -> bool:
        """Count an error reply; True when the session was closed for too many."""
        self._errors += 1
        if self._errors < MAX_ERRORS:
            return False
        log.info("too many errors from %s", self.peer[0])
        self.goodbye(f"421 4.7.0 {self.hostname} Error: too many errors")
        return True

    async def handle_exception(self, error: Exception) -> str:
        if isinstance(error, TLSSetupException):
            why = error.__cause__ or error
            log.info("TLS handshake failed with %s: %r", self.peer[0], why)
            if self.settings.tls is not None:
                self.settings.tls.handshake_failed(error.__cause__)
            return "454 4.7.0 TLS handshake failed"
        log.exception("session error with %s", self.peer[0])
        return "451 4.3.0 Error: internal error, try again later"

    # -- commands ----------------------------------------------------------------

    @syntax("HELO hostname")
    async def smtp_HELO(self, hostname: str) -> None:  # noqa: N802
        if not hostname:
            await self.push("501 5.5.4 Syntax: HELO hostname")
            return
        self._new_transaction()
        assert self.session is not None
        self.session.extended_smtp = False
        self.session.host_name = hostname
        await self._send([f"250 {self.hostname}"])

    @syntax("EHLO hostname")
    async def smtp_EHLO(self, hostname: str) -> None:  # noqa: N802
        if not hostname:
            await self.push("501 5.5.4 Syntax: EHLO hostname")
            return
        self._new_transaction()
        assert self.session is not None
        self.session.extended_smtp = True
        self.session.host_name = hostname
        keywords = [self.hostname, "PIPELINING", f"SIZE {self.settings.max_message_size}"]
        if self.tls_context is not None and not self.tls:
            keywords.append("STARTTLS")
        if self.settings.offers_auth and self.tls:
            keywords.append("AUTH " + " ".join(MECHANISMS))
        keywords += ["ENHANCEDSTATUSCODES", "8BITMIME", "SMTPUTF8", "DSN", "CHUNKING"]
        if self.settings.mt_priority:
            keywords.append("MT-PRIORITY")
        last = len(keywords) - 1
        await self._send([f"250{' ' if i == last else '-'}{k}" for i, k in enumerate(keywords)])

    @syntax("STARTTLS", when="tls_context")
    async def smtp_STARTTLS(self, arg: str) -> None:  # noqa: N802
        if self.tls:
            await self.push("554 5.5.1 Error: TLS already active")
            return
        if arg:
            await self.push("501 5.5.4 Syntax: STARTTLS")
            return
        # Plaintext pipelined after STARTTLS must never be read as a command
        # inside TLS (RFC 3207 section 4.2, CVE-2011-0411): aiosmtpd drops it
        # when the handshake completes, before the first decrypted byte.
        await super().smtp_STARTTLS(arg)
        if not self.tls:
            # The connection was closed before the handshake completed (our
            # idle timeout, say): asyncio then ends the handshake wait without
            # an error and never reports the connection lost. aiosmtpd's own
            # cleanup for a failed handshake ends the session instead.
            raise TLSSetupException("connection closed during the TLS handshake")

    @syntax("RSET")
    async def smtp_RSET(self, arg: str) -> None:  # noqa: N802
        if arg:
            await self.push("501 5.5.4 Syntax: RSET")
            return
        self._new_transaction()
        await self.push("250 2.0.0 Ok")

    @syntax("VRFY <address>")
    async def smtp_VRFY(self, arg: str) -> None:  # noqa: N802
        # Nothing is verified (it would tell harvesters which mailboxes exist);
        # a malformed argument still hears that it is malformed.
        if not arg or not arg.isprintable():
            await self.push("501 5.5.4 Syntax: VRFY <address>")
            return
        await self.push("252 2.0.0 Cannot VRFY user, but will accept message and attempt delivery")

    def _log_reject(
        self, stage: str, reply: str, envelope: Envelope | None, to: str = "", sender: str = ""
    ) -> None:
        helo = (self.session.host_name or "") if self.session is not None else ""
        if envelope is not None:
            sender = envelope.mail_from or ""
        log.info(
            "reject: %s from unknown[%s]: %s; from=<%s>%s helo=<%s>",
            stage,
            self.peer[0],
            clean_text(reply, 512),
            clean_text(sender, 512),
            f" to=<{clean_text(to, 512)}>" if to else "",
            clean_text(helo),
            extra={"reply": clean_text(reply, 512), "client_ip": self.peer[0], "stage": stage},
        )
