"""MAIL and RCPT: the envelope of a transaction, read and checked.

``MAIL FROM`` is read by :func:`.arguments.read_mail` (a malformed address or
parameter is a ``501``/``555``, never an exception); on a submission listener it
needs AUTH first (``530 5.7.0``) and an authenticated client must own the
sender (``553 5.7.1``); the per-client message rate (``421 4.7.0`` / ``450
4.7.1``, :mod:`.limits`) and policy's sender check come next. ``RCPT TO``: at
most ``ingress.max_recipients`` (``452 4.5.3``), the per-client recipient rate,
relay control (:mod:`.relay`: no open relay), then policy's recipient check; a
recipient given twice is kept once.

:class:`EnvelopeCommands` is mixed into :class:`.protocol.IngressSMTP` ahead of
aiosmtpd's ``SMTP``, whose own ``smtp_MAIL`` and ``smtp_RCPT`` it replaces.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiosmtpd.smtp import syntax

from .arguments import Mail, read_mail, read_rcpt
from .replies import SHUTDOWN
from .sessionparts import SessionParts
from .smtpauth import AUTH_REQUIRED, SENDER_NOT_OWNED, owns
from .stages import Client
from .text import clean_text

if TYPE_CHECKING:
    from aiosmtpd.smtp import Envelope


__all__ = ["EnvelopeCommands"]


class EnvelopeCommands(SessionParts):
    """``MAIL`` and ``RCPT`` for the session it is mixed into
    (:class:`.protocol.IngressSMTP`)."""

    @syntax("MAIL FROM: <address>", extended=" [SP <mail-parameters>]")
    async def smtp_MAIL(self, arg: str | None) -> None:  # noqa: N802
        if await self.check_helo_needed():
            return
        assert self.envelope is not None and self.session is not None
        if self.envelope.mail_from is not None:
            await self.push("503 5.5.1 Error: nested MAIL command")
            return
        if self.host.draining:
            await self.push(SHUTDOWN)
            return
        if self.settings.requires_auth and self.user is None:
            self._log_reject("MAIL", AUTH_REQUIRED, None, sender=arg or "")
            await self.push(AUTH_REQUIRED)
            return
        mail = read_mail(
            arg,
            self.session.extended_smtp,
            self.settings.max_message_size,
            self.settings.mt_priority,
        )
        if isinstance(mail, str):
            self._log_reject("MAIL", mail, None, sender=arg or "")
            await self.push(mail)
            return
        if self.user is not None and not owns(self.user, mail.sender):
            self._log_reject("MAIL", SENDER_NOT_OWNED, None, sender=mail.sender)
            await self.push(SENDER_NOT_OWNED)
            return
        limits = self.settings.limits
        refusal = await limits.message(self.peer[0]) if limits is not None else None
        if refusal:
            self._log_reject("MAIL", refusal, None, sender=mail.sender)
            await self.push(refusal)
            return
        refusal = await self.check_mail(mail)
        if refusal:
            await self.push(refusal)
            return
        self.envelope.mail_from = mail.sender
        self.envelope.mail_options.extend(mail.options)
        self.envelope.smtp_utf8 = mail.smtputf8
        self.dsn.ret, self.dsn.envid = mail.ret, mail.envid
        self._mt_priority = mail.mt_priority
        await self.push("250 2.1.0 Ok")

    def _client(self) -> Client:
        helo = clean_text(self.session.host_name or "") if self.session is not None else ""
        ip, port = self.peer
        return Client(
            ip,
            port,
            helo,
            self.tls,
            connect_checked=self._connect_checked,
            authenticated=self.user is not None,
        )

    async def check_mail(self, mail: Mail) -> str | None:
        """Policy on the sender (and, once per session, on the client)."""
        client = self._client()
        if self.settings.stages.applies(client):
            client.hostname = await self.client_name()
        refusal = await self.settings.stages.mail(client, mail.sender)
        self._connect_checked = client.connect_checked
        if refusal:
            self._log_reject("MAIL", refusal, None, sender=mail.sender)
        return refusal

    @syntax("RCPT TO: <address>", extended=" [SP <mail-parameters>]")
    async def smtp_RCPT(self, arg: str | None) -> None:  # noqa: N802
        if await self.check_helo_needed():
            return
        envelope = self.envelope
        assert envelope is not None and self.session is not None
        if envelope.mail_from is None:
            await self.push("503 5.5.1 Error: need MAIL command")
            return
        reply = await self._recipient(envelope, arg)
        await self.push(reply)

    async def _recipient(self, envelope: Envelope, arg: str | None) -> str:
        """Take the recipient of ``RCPT <arg>`` into ``envelope``; the reply."""
        if len(envelope.rcpt_tos) >= self.settings.max_recipients:
            return "452 4.5.3 Too many recipients"
        limits = self.settings.limits
        refusal = await limits.recipient(self.peer[0]) if limits is not None else None
        if refusal:
            self._log_reject("RCPT", refusal, envelope, to=arg or "")
            return refusal
        assert self.session is not None
        rcpt = read_rcpt(arg, self.session.extended_smtp, bool(envelope.smtp_utf8))
        relay = self.settings.relay
        if isinstance(rcpt, str):
            reply, to = rcpt, arg or ""
        else:
            to = relay.normalize(rcpt.recipient) or rcpt.recipient
            reply = relay.check(self.peer[0], to, authenticated=self.user is not None) or ""
        if reply:
            self._log_reject("RCPT", reply, envelope, to=to)
            return reply
        assert not isinstance(rcpt, str)
        sender = envelope.mail_from or ""
        refusal = await self.settings.stages.rcpt(self._client(), sender, to)
        if refusal:
            self._log_reject("RCPT", refusal, envelope, to=to)
            return refusal
        if to not in envelope.rcpt_tos:
            envelope.rcpt_tos.append(to)
            envelope.rcpt_options.extend(rcpt.options)
            self.dsn.add_recipient(to, rcpt.notify, rcpt.orcpt)
        return "250 2.1.5 Ok"
