"""The SMTP client (RFC 5321) on aiosmtplib: MX and relay delivery.

A session is opened once and carries many messages (see :mod:`.pool`):
connect (TLS from the first byte for relays with ``implicit_tls``), greeting,
EHLO (HELO if EHLO is refused), then STARTTLS whenever the peer offers it and
the level is not ``none``. At ``may`` that TLS is opportunistic (RFC 7435, RFC
3207): the certificate is not checked, since an unauthenticated encrypted
session is still better than plain text, and a failed handshake falls back to
a new plain-text connection rather than to no delivery at all. Where TLS is
mandatory, a missing STARTTLS, a failed handshake or a certificate that does
not hold closes the session before MAIL FROM. Relays with credentials get
SMTP AUTH after TLS (:mod:`.relayauth`).

Per message: MAIL FROM (with SIZE when offered, BODY=8BITMIME when the message
has 8-bit content and the peer offers it, SMTPUTF8 when the envelope needs it —
a peer without SMTPUTF8 then fails the message with 5.6.7, RFC 6531), one RCPT
TO per recipient, each answered on its own, and DATA for the accepted ones. A
peer offering DSN gets the sender's DSN parameters (:mod:`.dsnrelay`), one
offering MT-PRIORITY (RFC 6710) the message's priority when it is not 0.
A peer offering PIPELINING gets MAIL, the RCPTs and DATA in one packet; one
offering CHUNKING gets the message as a single ``BDAT <size> LAST`` (see
:mod:`.pipelining`).

Which TLS a session needs, and whether the certificate holds, is decided by
:mod:`.tlspolicy` and :mod:`.tlscheck`; this module connects and asks.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import ssl
from collections.abc import Callable

import aiosmtplib
from aiosmtplib import (
    SMTPConnectResponseError,
    SMTPException,
    SMTPHeloError,
    SMTPResponseException,
)

from elemta.common.config import Config, Route
from elemta.common.envelope import DeliveryJob, RecipientResult
from elemta.common.replies import Reply
from elemta.common.resolver import DnsError, Resolver

from . import dataphase, dsnrelay, pipelining
from .errors import NOT_RECORDABLE, SessionFailure, connect_failure, lost_connection
from .metrics import TLS_SESSIONS
from .outcome import Delivery
from .pool import Claim, Pool
from .relayauth import login
from .tlscheck import Verifier, peer_chain
from .tlspolicy import PolicyReport, ResultSink, TlsPolicy, TlsRequirement
from .transport import Pacer, SessionTransport, always_recordable, path_bytes, peer_name

dataphase.install()
pipelining.install()

__all__ = ["SmtpSession", "SmtpTransport", "opportunistic_tls_context"]

log = logging.getLogger(__name__)

# Errors meaning the conversation itself broke (as opposed to a reply).
_LOST = (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError, OSError, TimeoutError)


def opportunistic_tls_context() -> ssl.SSLContext:
    """TLS without certificate checks, for opportunistic STARTTLS (RFC 7435)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class SmtpSession:
    """One connection to one peer, possibly carrying many transactions."""

    def __init__(
        self,
        client: aiosmtplib.SMTP,
        peer: str,
        tls: bool,
        timeout: float,
        recordable: Callable[[], bool] = always_recordable,
    ) -> None:
        self.client = client
        self.peer = peer
        self.tls = tls
        self.timeout = timeout
        # whether an outcome can be recorded now (the connection to NATS is up)
        self.recordable = recordable
        self.broken = False
        self.clean = False  # the last transaction got its final reply: no RSET needed

    @property
    def usable(self) -> bool:
        return not self.broken and self.client.is_connected

    async def reset(self) -> bool:
        try:
            reply = await self.client.execute_command(b"RSET", timeout=min(self.timeout, 30.0))
        except (SMTPException, *_LOST):
            self.broken = True
            return False
        return reply.code == 250

    async def quit(self) -> None:
        await self.client.quit()

    def close(self) -> None:
        self.client.close()

    async def send(self, job: DeliveryJob, body: bytes) -> list[RecipientResult]:
        """One transaction; per-recipient results in the job's order.

        With PIPELINING, MAIL FROM, the RCPT TOs and (without CHUNKING) DATA go
        out together; with CHUNKING the message goes as one ``BDAT ... LAST``.
        Raises :class:`SessionFailure` when the peer dropped the session or
        answered 421 before taking MAIL FROM: the next host may do better.
        """
        c = self.client
        self.clean = False
        results: dict[str, RecipientResult] = {}
        options: list[bytes] = []
        if job.smtputf8:
            if not c.supports_extension("smtputf8"):
                reply = Reply(
                    553, "5.6.7", f"SMTPUTF8 is required, but {self.peer} does not offer it"
                )
                return [reply.result(r) for r in job.recipients]
            options.append(b"SMTPUTF8")
        if job.body_8bit and c.supports_extension("8bitmime"):
            options.append(b"BODY=8BITMIME")
        if c.supports_extension("size"):
            options.append(b"SIZE=%d" % len(body))
        dsn = c.supports_extension("dsn")
        if dsn:
            options.extend(dsnrelay.mail_options(job))
        if job.priority and c.supports_extension("mt-priority"):
            options.append(b"MT-PRIORITY=%d" % job.priority)
        try:
            sender = path_bytes(job.sender)
        except ValueError as exc:
            return [Reply(553, "5.1.7", str(exc)).result(r) for r in job.recipients]
        rcpts: list[tuple[str, bytes]] = []
        for rcpt in dict.fromkeys(job.recipients):
            try:
                extra = dsnrelay.rcpt_options(job, rcpt) if dsn else b""
                rcpts.append((rcpt, b"RCPT TO:" + path_bytes(rcpt) + extra))
            except ValueError as exc:
                results[rcpt] = Reply(553, "5.1.3", str(exc)).result(rcpt)
        mail = b" ".join([b"MAIL FROM:" + sender, *options])
        chunking = c.supports_extension("chunking")
        pipelined = c.supports_extension("pipelining")
        stage = "sending MAIL FROM"
        try:
            if pipelined:
                commands = [mail, *(cmd for _, cmd in rcpts)] + ([] if chunking else [b"DATA"])
                replies = await pipelining.batch(c, commands, self.timeout)
            else:
                replies = [await c.execute_command(mail)]
            first = Reply.parse(replies[0].code, replies[0].message)
            if not first.ok:
                if pipelined and not chunking and replies[-1].code == 354:
                    await pipelining.message_after_354(c, b"", self.timeout)  # end it empty
                if first.code == 421 or not c.is_connected:
                    self.broken = True
                    raise SessionFailure(first)
                return [results.get(r) or first.result(r) for r in job.recipients]
            stage = "sending RCPT TO"
            accepted: list[str] = []
            for i, (rcpt, command) in enumerate(rcpts):
                r = replies[i + 1] if pipelined else await c.execute_command(command)
                reply = Reply.parse(r.code, r.message)
                if reply.ok:
                    accepted.append(rcpt)
                else:
                    results[rcpt] = reply.result(rcpt)
                if r.code == 421:
                    self.broken = True
                    for rest in job.recipients:
                        results.setdefault(rest, reply.result(rest))
                    accepted = []
                    break
            stage = "sending message content"
            final: aiosmtplib.SMTPResponse | None = None
            if accepted and not self.recordable():
                # Sent now, its delivery could not be recorded and the message would
                # go again when offered again: the transaction is left without its
                # end (the connection closed), so the peer delivers nothing.
                self.broken = True
                self.close()
                for rcpt in accepted:
                    results[rcpt] = NOT_RECORDABLE.result(rcpt)
                accepted = []
            elif pipelined and not chunking:
                started = replies[-1]
                if started.code == 354:  # whatever was accepted, the server waits for data
                    final = await pipelining.message_after_354(
                        c, body if accepted else b"", self.timeout, as_is=job.wire_ready
                    )
                elif accepted:
                    final = started
            elif accepted and chunking:
                final = await pipelining.bdat(c, body, self.timeout)
            elif accepted:
                try:
                    final = await c.data(body)
                except SMTPResponseException as exc:
                    final = aiosmtplib.SMTPResponse(exc.code, exc.message)
            if final is not None and accepted:
                self.clean = final.code != 421
                if final.code == 421:
                    self.broken = True
                reply = Reply.parse(final.code, final.message)
                for rcpt in accepted:
                    results[rcpt] = reply.result(rcpt)
        except _LOST as exc:
            self.broken = True
            lost = lost_connection(self.peer, stage, exc)
            if stage == "sending MAIL FROM":
                raise SessionFailure(lost) from None
            for rcpt in job.recipients:
                results.setdefault(rcpt, lost.result(rcpt))
        except SMTPException as exc:  # e.g. a garbled reply
            self.broken = True
            reply = Reply(451, "4.5.0", f"protocol error with {self.peer} while {stage}: {exc}")
            for rcpt in job.recipients:
                results.setdefault(rcpt, reply.result(rcpt))
        ordered = [results[r] for r in job.recipients]
        if dsn:
            dsnrelay.mark_passed(ordered)
        return ordered


class SmtpTransport(SessionTransport[SmtpSession]):
    """``mx`` and ``smtp`` routes: MX lookup (or the relay host), then SMTP."""

    def __init__(
        self,
        cfg: Config,
        resolver: Resolver,
        tls: TlsPolicy | None = None,
        results: ResultSink | None = None,
        recordable: Callable[[], bool] = always_recordable,
    ) -> None:
        d = cfg.delivery
        self.recordable = recordable  # see SmtpSession.recordable
        super().__init__(
            resolver, Pool(d.max_connections_per_destination, d.idle_connection_timeout)
        )
        self.helo = d.helo_name or cfg.server.hostname
        self.connect_timeout = d.connect_timeout
        self.command_timeout = d.command_timeout
        self.tls_context = opportunistic_tls_context()
        self.tls = tls or TlsPolicy(cfg, resolver)
        self.verifier = Verifier(d.tls_ca_file)
        self.results = results

    async def deliver(
        self,
        job: DeliveryJob,
        body: bytes,
        route: Route,
        pacer: Pacer | None = None,
        claim: Claim | None = None,
    ) -> Delivery:
        """Deliver ``job``; ``pacer`` and ``claim`` as in :meth:`send_to_hosts`."""
        dest = self.tls.destination(job, route)
        if not dest.mx_lookup or _is_address(dest.domain):
            hosts, secure = [dest.domain], True  # no MX answer to distrust
        else:
            try:
                mx, secure = await self.resolver.mx_secure(dest.domain)
            except DnsError as exc:
                return Delivery.everyone(job, dest.domain, exc.reply)
            hosts = [m.host for m in mx]
        plan = await self.tls.plan(dest, hosts, secure)
        if self.results is not None:
            if plan.sts_error is not None:
                err = plan.sts_error
                self.results.record(
                    PolicyReport("sts", dest.domain), err.result_type, "", "", err.text
                )
            if plan.failure is not None and plan.report is not None:
                reason = plan.failure.text
                self.results.record(plan.report, "validation-failure", "", "", reason)
        if plan.failure is not None:
            return Delivery.everyone(job, dest.domain, plan.failure)
        return await self.send_to_hosts(
            job, body, plan.hosts, dest.port, plan.requirement, pacer, claim
        )

    async def open(
        self, name: str, addr: str, port: int, tls: TlsRequirement | None = None
    ) -> SmtpSession:
        req = tls or TlsRequirement(level=self.tls.default, names=(name,), sni=name)
        peer = peer_name(name, addr, port)
        sni = None if _is_address(req.sni or name) else (req.sni or name)
        if req.implicit:
            client = await self._connect(addr, port, peer, tls_name=sni or addr)
            await self._judge(client, req, name, addr, peer)
            await self._hello(client, peer)
            return await self._ready(client, req, peer, tls=True)
        client = await self._connect(addr, port, peer)
        if req.level == "none":
            return SmtpSession(client, peer, False, self.command_timeout, self.recordable)
        if not client.supports_extension("starttls"):
            self._record(
                req, "starttls-not-supported", name, addr, f"{peer} offers no STARTTLS", client
            )
            if req.mandatory:
                client.close()
                raise SessionFailure(
                    Reply(451, "4.7.4", f"TLS is required, but was not offered by {peer}")
                )
            return await self._ready(client, req, peer, tls=False)
        try:
            await client.starttls(server_hostname=sni, tls_context=self.tls_context)
        except SMTPResponseException as exc:  # STARTTLS refused
            why = f"{exc.code} {exc.message}"
            self._record(req, "starttls-not-supported", name, addr, why, client)
            if req.mandatory:
                client.close()
                raise SessionFailure(
                    Reply(451, "4.7.5", f"{peer} refused STARTTLS: {exc.code} {exc.message}")
                ) from None
            log.info("%s refused STARTTLS: %s %s", peer, exc.code, exc.message)
            if not client.is_connected:
                client = await self._connect(addr, port, peer)
            return await self._ready(client, req, peer, tls=False)
        except (SMTPException, ssl.SSLError, OSError, TimeoutError) as exc:
            client.close()
            self._record(req, "validation-failure", name, addr, f"TLS handshake failed: {exc}")
            if req.mandatory:
                raise SessionFailure(
                    Reply(451, "4.7.5", f"TLS handshake with {peer} failed: {exc}")
                ) from None
            log.info("TLS handshake with %s failed (%s); retrying in plain text", peer, exc)
            client = await self._connect(addr, port, peer)
            return await self._ready(client, req, peer, tls=False)
        await self._judge(client, req, name, addr, peer)
        await self._hello(client, peer)
        return await self._ready(client, req, peer, tls=True)

    async def _judge(
        self, client: aiosmtplib.SMTP, req: TlsRequirement, name: str, addr: str, peer: str
    ) -> None:
        """Check the presented certificate against the requirement; raise when it must hold."""
        ssl_object = client.get_transport_info("ssl_object")
        verdict = self.verifier.check(req, peer_chain(ssl_object))
        if not verdict.ok:
            self._record(req, verdict.result_type, name, addr, verdict.reason, client)
            if req.enforced:
                client.close()
                TLS_SESSIONS.labels(_policy(req), "failed").inc()
                raise SessionFailure(Reply(451, "4.7.5", f"{peer}: {verdict.reason}"))
            log.info("%s: %s (not enforced)", peer, verdict.reason)
        elif req.unusable_tlsa:
            self._record(req, "tlsa-invalid", name, addr, "no usable TLSA record", client)
        else:
            self._record(req, "", name, addr, "", client)
        kind = "Verified" if req.authenticated and verdict.ok else "Untrusted"
        cipher = ssl_object.cipher() if ssl_object is not None else None
        log.info(
            "%s TLS connection established to %s: %s with cipher %s",
            kind,
            peer,
            cipher[1] if cipher else "?",
            cipher[0] if cipher else "?",
        )

    def _record(
        self,
        req: TlsRequirement,
        result: str,
        host: str,
        addr: str,
        why: str,
        client: aiosmtplib.SMTP | None = None,
    ) -> None:
        if self.results is None or req.report is None:
            return
        local = ""
        if client is not None:
            sockname = client.get_transport_info("sockname")
            local = str(sockname[0]) if sockname else ""
        self.results.record(req.report, result, host, addr, why, local)

    async def _ready(
        self, client: aiosmtplib.SMTP, req: TlsRequirement, peer: str, tls: bool
    ) -> SmtpSession:
        """Log in to a relay when it has credentials; count the session."""
        if req.relay is not None and req.relay.username_file:
            await login(client, req.relay, peer)
        outcome = "plain" if not tls else "verified" if req.authenticated else "encrypted"
        TLS_SESSIONS.labels(_policy(req), outcome).inc()
        return SmtpSession(client, peer, tls, self.command_timeout, self.recordable)

    async def _connect(
        self, addr: str, port: int, peer: str, tls_name: str | None = None
    ) -> aiosmtplib.SMTP:
        """Connect and say EHLO; with ``tls_name``, TLS from the first byte (SNI that name)."""
        client: aiosmtplib.SMTP
        try:
            if tls_name is None:
                client = aiosmtplib.SMTP(
                    hostname=addr,
                    port=port,
                    local_hostname=self.helo,
                    timeout=self.command_timeout,
                    start_tls=False,
                    validate_certs=False,
                )
            else:
                client = aiosmtplib.SMTP(
                    hostname=tls_name,
                    sock=await _open_socket(addr, port, self.connect_timeout),
                    local_hostname=self.helo,
                    timeout=self.command_timeout,
                    use_tls=True,
                    tls_context=self.tls_context,
                )
        except (OSError, TimeoutError) as exc:
            raise SessionFailure(connect_failure(peer, exc)) from None
        try:
            await client.connect(timeout=self.connect_timeout)
        except SMTPConnectResponseError as exc:  # greeted with 421/554
            client.close()
            raise SessionFailure(Reply.parse(exc.code, exc.message)) from None
        except (SMTPException, ssl.SSLError, OSError, TimeoutError) as exc:
            client.close()
            raise SessionFailure(connect_failure(peer, exc)) from None
        await self._hello(client, peer)
        return client

    async def _hello(self, client: aiosmtplib.SMTP, peer: str) -> None:
        try:
            try:
                await client.ehlo()
            except SMTPHeloError:
                if not client.is_connected:
                    raise
                await client.helo()
        except SMTPResponseException as exc:
            client.close()
            raise SessionFailure(Reply.parse(exc.code, exc.message)) from None
        except (SMTPException, OSError, TimeoutError) as exc:
            client.close()
            raise SessionFailure(lost_connection(peer, "saying EHLO", exc)) from None


def _policy(req: TlsRequirement) -> str:
    """The metric label: the level, or the policy that set it."""
    if req.report is not None:
        return "sts" if req.report.policy_type == "sts" else "dane"
    return req.level


async def _open_socket(addr: str, port: int, within: float) -> socket.socket:
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        async with asyncio.timeout(within):
            await asyncio.get_running_loop().sock_connect(sock, (addr, port))
    except BaseException:
        sock.close()
        raise
    return sock
