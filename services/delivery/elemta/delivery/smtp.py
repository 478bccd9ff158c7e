"""The SMTP client (RFC 5321) on aiosmtplib: MX and relay delivery.

A session is opened once and carries many messages (see :mod:`.pool`):
connect, greeting, EHLO (HELO if EHLO is refused), then STARTTLS whenever the
peer offers it and ``delivery.starttls`` is on. That TLS is opportunistic
(RFC 7435, RFC 3207): the certificate is not checked, since an unauthenticated
encrypted session is still better than plain text, and a failed handshake falls
back to a new plain-text connection rather than to no delivery at all.

Per message: MAIL FROM (with SIZE when offered, BODY=8BITMIME when the message
has 8-bit content and the peer offers it, SMTPUTF8 when the envelope needs it —
a peer without SMTPUTF8 then fails the message with 5.6.7, RFC 6531), one RCPT
TO per recipient, each answered on its own, and DATA for the accepted ones.
"""

from __future__ import annotations

import ipaddress
import logging
import ssl

import aiosmtplib
from aiosmtplib import (
    SMTPConnectResponseError,
    SMTPException,
    SMTPHeloError,
    SMTPResponseException,
)

from elemta.common.config import Config, Route
from elemta.common.envelope import DeliveryJob, RecipientResult
from elemta.common.resolver import DnsError, Resolver

from . import dataphase
from .errors import Reply, SessionFailure, connect_failure, lost_connection
from .outcome import Delivery
from .pool import Pool
from .transport import SessionTransport, peer_name

dataphase.install()

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


def _address(addr: str) -> bytes:
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in addr):
        raise ValueError(f"control character in address {addr!r}")
    return b"<" + addr.encode("utf-8") + b">"


class SmtpSession:
    """One connection to one peer, possibly carrying many transactions."""

    def __init__(self, client: aiosmtplib.SMTP, peer: str, tls: bool, timeout: float) -> None:
        self.client = client
        self.peer = peer
        self.tls = tls
        self.timeout = timeout
        self.broken = False

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

        Raises :class:`SessionFailure` when the peer dropped the session or
        answered 421 before taking MAIL FROM: the next host may do better.
        """
        c = self.client
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
        stage = "sending MAIL FROM"
        try:
            try:
                sender = _address(job.sender)
            except ValueError as exc:
                return [Reply(553, "5.1.7", str(exc)).result(r) for r in job.recipients]
            r = await c.execute_command(b"MAIL", b"FROM:" + sender, *options)
            mail = Reply.parse(r.code, r.message)
            if not mail.ok:
                if r.code == 421 or not c.is_connected:
                    self.broken = True
                    raise SessionFailure(mail)
                return [mail.result(rcpt) for rcpt in job.recipients]
            stage = "sending RCPT TO"
            accepted: list[str] = []
            for rcpt in dict.fromkeys(job.recipients):
                try:
                    to = _address(rcpt)
                except ValueError as exc:
                    results[rcpt] = Reply(553, "5.1.3", str(exc)).result(rcpt)
                    continue
                r = await c.execute_command(b"RCPT", b"TO:" + to)
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
            if accepted:
                stage = "sending message content"
                try:
                    r = await c.data(body)
                except SMTPResponseException as exc:
                    r = aiosmtplib.SMTPResponse(exc.code, exc.message)
                    if exc.code == 421:
                        self.broken = True
                final = Reply.parse(r.code, r.message)
                for rcpt in accepted:
                    results[rcpt] = final.result(rcpt)
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
        return [results[r] for r in job.recipients]


class SmtpTransport(SessionTransport[SmtpSession]):
    """``mx`` and ``smtp`` routes: MX lookup (or the relay host), then SMTP."""

    def __init__(self, cfg: Config, resolver: Resolver) -> None:
        d = cfg.delivery
        super().__init__(
            resolver, Pool(d.max_connections_per_destination, d.idle_connection_timeout)
        )
        self.helo = d.helo_name or cfg.server.hostname
        self.mx_port = d.smtp_port
        self.starttls = d.starttls
        self.connect_timeout = d.connect_timeout
        self.command_timeout = d.command_timeout
        self.tls_context = opportunistic_tls_context()

    async def deliver(self, job: DeliveryJob, body: bytes, route: Route) -> Delivery:
        if route.kind == "mx":
            domain, port, lookup = job.domain, self.mx_port, True
        else:
            domain, port, lookup = route.host, route.port, route.mx_lookup
        if not lookup or _is_address(domain):
            return await self.send_to_hosts(job, body, [domain], port)
        try:
            hosts = [mx.host for mx in await self.resolver.mx(domain)]
        except DnsError as exc:
            return Delivery.everyone(job, domain, Reply.from_dns(exc))
        return await self.send_to_hosts(job, body, hosts, port)

    async def open(self, name: str, addr: str, port: int) -> SmtpSession:
        peer = peer_name(name, addr, port)
        client = await self._connect(addr, port, peer)
        tls = False
        if self.starttls and client.supports_extension("starttls"):
            sni = None if name == addr else name
            try:
                await client.starttls(server_hostname=sni, tls_context=self.tls_context)
            except SMTPResponseException as exc:  # STARTTLS refused: go on in plain text
                log.info("%s refused STARTTLS: %s %s", peer, exc.code, exc.message)
                if not client.is_connected:
                    client = await self._connect(addr, port, peer)
            except (SMTPException, ssl.SSLError, OSError, TimeoutError) as exc:
                log.info("TLS handshake with %s failed (%s); retrying in plain text", peer, exc)
                client.close()
                client = await self._connect(addr, port, peer)
            else:
                tls = True
                await self._hello(client, peer)
        return SmtpSession(client, peer, tls, self.command_timeout)

    async def _connect(self, addr: str, port: int, peer: str) -> aiosmtplib.SMTP:
        client = aiosmtplib.SMTP(
            hostname=addr,
            port=port,
            local_hostname=self.helo,
            timeout=self.command_timeout,
            start_tls=False,
            validate_certs=False,
        )
        try:
            await client.connect(timeout=self.connect_timeout)
        except SMTPConnectResponseError as exc:  # greeted with 421/554
            client.close()
            raise SessionFailure(Reply.parse(exc.code, exc.message)) from None
        except (SMTPException, OSError, TimeoutError) as exc:
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
