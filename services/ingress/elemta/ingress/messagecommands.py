"""DATA, and the end of every transaction (DATA's and BDAT LAST's).

DATA is read in bulk up to ``<CRLF>.<CRLF>`` (:mod:`.data`) and checked as a
whole; the end of a transaction checks what was received, hands the message to
the :class:`.transaction.MessageProcessor` (policy, then the durable store) and
answers: ``250`` only once JetStream acknowledged the store. Once the message is
being handled it is finished even if the client goes away.

:class:`MessageCommands` is mixed into :class:`.protocol.IngressSMTP` ahead of
aiosmtpd's ``SMTP``, whose ``smtp_DATA`` it replaces; BDAT
(:mod:`.chunking`) ends its transactions through :meth:`MessageCommands._complete`.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from aiosmtpd.smtp import syntax

from . import metrics
from .chunking import check_chunked
from .data import check_data, read_data
from .replies import TOO_BIG
from .sessionparts import SessionParts
from .text import clean_text
from .transaction import Transaction

if TYPE_CHECKING:
    from aiosmtpd.smtp import Envelope


__all__ = ["MessageCommands"]


class MessageCommands(SessionParts):
    """``DATA`` and the end of a transaction for the session it is mixed into
    (:class:`.protocol.IngressSMTP`)."""

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:  # noqa: N802
        if await self.check_helo_needed():
            return
        assert self.envelope is not None and self.session is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 5.5.1 Error: need RCPT command")
            return
        if self._chunks is not None:
            await self.push("503 5.5.1 Error: BDAT transaction in progress, DATA not allowed")
            return
        if arg:
            await self.push("501 5.5.4 Syntax: DATA")
            return
        refusal = self.settings.processor.precheck()
        if refusal:
            metrics.count_message("tempfail")
            self._log_reject("DATA", refusal, self.envelope)
            self._new_transaction()
            await self.push(refusal)
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        self._in_data = True
        self._arm(self.settings.data_timeout)
        try:
            # aiosmtpd offers no public access to the connection's stream.
            raw = await read_data(self._reader, self._data_limit)
        except asyncio.IncompleteReadError:  # the client went away mid-DATA
            if self.transport is not None:
                self.transport.close()
            return
        finally:
            self._in_data = False
        await self._complete(raw, self.envelope, time.perf_counter())

    async def _complete(
        self, raw: bytes | None, envelope: Envelope, ended: float, chunked: bool = False
    ) -> None:
        """End a transaction and answer it: DATA's end and BDAT LAST's. While the
        message is being finished the session counts as processing (a shutdown
        waits for it); the next transaction starts clean whatever happened."""
        self._processing = True
        try:
            reply = await self._finish(raw, envelope, ended, chunked)
        finally:
            self._processing = False
            self._new_transaction()
        if reply.startswith("250"):
            self._errors = 0
        await self.push(reply)

    async def _finish(
        self, raw: bytes | None, envelope: Envelope, ended: float, chunked: bool = False
    ) -> str:
        """Check the received data (DATA with its end mark, or BDAT's assembled
        chunks) and hand the message on; return the reply."""
        limits = (self.settings.max_message_size, self.settings.max_line_length)
        if raw is None:
            content, reply = b"", TOO_BIG
        elif chunked:
            content, reply = check_chunked(raw, *limits)
        else:
            content, reply = check_data(raw, *limits)
        if reply:
            metrics.count_message("rejected")
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
            tls=self.tls,
            authenticated_user=self.user.login if self.user is not None else "",
            submission=self.settings.role != "mta",
            sender=envelope.mail_from,
            recipients=list(envelope.rcpt_tos),
            smtputf8=bool(envelope.smtp_utf8),
            body_8bit="BODY=8BITMIME" in envelope.mail_options,
            data_ended=ended,
            dsn=self.dsn,
            mt_priority=self._mt_priority,
            client_name=await self.client_name(),
        )
        # The client waits for us now; only a safety net of a timeout applies.
        self._arm(self.settings.processing_timeout)
        # Once the message is ours to handle, finish handling it even if the
        # client goes away: no half-stored message, no orphaned body.
        task = asyncio.get_running_loop().create_task(self.settings.processor.process(tx, content))
        self.host.track(task)
        return await asyncio.shield(task)
