"""A sink that offers DSN (RFC 3461): records the DSN parameters it is given; with
``mt_priority``, it offers MT-PRIORITY (RFC 6710) too and records that parameter.

aiosmtpd refuses every MAIL and RCPT parameter it does not know; this sink
advertises ``DSN``, takes ``RET``/``ENVID`` and ``NOTIFY``/``ORCPT`` off the
command (recording them) and lets aiosmtpd handle the rest as usual.
"""

from __future__ import annotations

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP

from .smtpsink import SmtpSink, _Handler

__all__ = ["DsnSink"]

_DSN_KEYS = ("RET=", "ENVID=", "NOTIFY=", "ORCPT=", "MT-PRIORITY=")


class _DsnSMTP(SMTP):
    sink: DsnSink

    def _strip(self, arg: str | None) -> tuple[str | None, list[str]]:
        if arg is None:
            return None, []
        words = arg.split(" ")
        dsn = [w for w in words if w.upper().startswith(_DSN_KEYS)]
        return " ".join(w for w in words if w not in dsn), dsn

    async def smtp_MAIL(self, arg: str | None) -> None:  # noqa: N802
        arg, dsn = self._strip(arg)
        self.sink.mail_params.append(dsn)
        await super().smtp_MAIL(arg)

    async def smtp_RCPT(self, arg: str | None) -> None:  # noqa: N802
        arg, dsn = self._strip(arg)
        self.sink.rcpt_params.append(dsn)
        await super().smtp_RCPT(arg)


class _DsnHandler(_Handler):
    mt_priority = False

    async def handle_EHLO(self, server, session, envelope, hostname, responses):  # type: ignore[no-untyped-def]
        session.host_name = hostname
        extra = ["250-DSN", *(["250-MT-PRIORITY"] if self.mt_priority else [])]
        return [*responses[:-1], *extra, responses[-1]]


class _DsnController(Controller):
    sink: DsnSink

    def factory(self) -> SMTP:
        smtp = _DsnSMTP(self.handler, hostname="sink.test", enable_SMTPUTF8=True)
        smtp.sink = self.sink
        return smtp


class DsnSink(SmtpSink):
    def __init__(self, mt_priority: bool = False) -> None:
        super().__init__()
        self.mail_params: list[list[str]] = []
        self.rcpt_params: list[list[str]] = []
        handler = _DsnHandler(self)
        handler.mt_priority = mt_priority
        self.controller = _DsnController(
            handler, hostname="127.0.0.1", port=self.port, server_hostname="sink.test"
        )
        self.controller.sink = self
