"""A small asyncio LMTP client (RFC 2033) for ``lmtp:host:port`` routes.

LMTP is SMTP for the last hop into a mail store (Dovecot, Cyrus): LHLO instead
of EHLO, and after the message one reply per accepted recipient instead of one
for the whole transaction, so each mailbox says for itself whether it took the
message. aiosmtplib does not speak it, hence this client.

When the server offers PIPELINING (RFC 2920, which RFC 2033 servers must),
MAIL FROM and every RCPT TO go out in one write and their replies are read
back in order. Sessions are pooled like SMTP sessions. As over SMTP, the message
after ``354`` (its final dot) is not sent while the delivery's outcome could not
be recorded (:func:`.transport.always_recordable`).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable

from elemta.common.config import Config, Route
from elemta.common.envelope import DeliveryJob, RecipientResult
from elemta.common.replies import Reply
from elemta.common.resolver import Resolver

from .errors import NOT_RECORDABLE, SessionFailure, connect_failure, lost_connection
from .outcome import Delivery
from .pool import Pool
from .tlspolicy import TlsRequirement
from .transport import SessionTransport, always_recordable, path_bytes, peer_name

__all__ = ["LmtpSession", "LmtpTransport", "dot_stuff"]

_LINE_ENDINGS = re.compile(rb"\r\n|\n|\r(?!\n)")
_LEADING_DOT = re.compile(rb"(?m)^\.")
_MAX_REPLY_LINES = 100


class ProtocolError(ConnectionError):
    """The server said something that is not an SMTP reply."""


def dot_stuff(body: bytes) -> bytes:
    """CRLF line endings, leading dots doubled, and the terminating ``.`` line."""
    body = _LINE_ENDINGS.sub(b"\r\n", body)
    if body and not body.endswith(b"\r\n"):
        body += b"\r\n"
    return _LEADING_DOT.sub(b"..", body) + b".\r\n"


class LmtpSession:
    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        peer: str,
        timeout: float,
        recordable: Callable[[], bool] = always_recordable,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.peer = peer
        self.timeout = timeout
        self.recordable = recordable  # see .transport.always_recordable
        self.extensions: set[str] = set()
        self.broken = False
        self.clean = False  # always RSET before the next message

    @classmethod
    async def open(
        cls,
        addr: str,
        port: int,
        peer: str,
        name: str,
        connect_wait: float,
        reply_wait: float,
        recordable: Callable[[], bool] = always_recordable,
    ) -> LmtpSession:
        """Connect, read the greeting and say LHLO; raises :class:`SessionFailure`."""
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(addr, port), connect_wait
            )
        except (OSError, TimeoutError) as exc:
            raise SessionFailure(connect_failure(peer, exc)) from None
        session = cls(reader, writer, peer, reply_wait, recordable)
        stage = "reading the greeting"
        try:
            code, lines = await session._read(connect_wait)
            if code != 220:
                raise SessionFailure(Reply.parse(code, "\n".join(lines)))
            stage = "saying LHLO"
            session._write(b"LHLO " + name.encode("ascii", "replace") + b"\r\n")
            code, lines = await session._read()
            if code != 250:
                raise SessionFailure(Reply.parse(code, "\n".join(lines)))
        except (OSError, TimeoutError) as exc:
            session.close()
            raise SessionFailure(lost_connection(peer, stage, exc)) from None
        except SessionFailure:
            session.close()
            raise
        session.extensions = {line.split(" ", 1)[0].upper() for line in lines[1:] if line}
        return session

    # -- Session protocol ------------------------------------------------------

    @property
    def usable(self) -> bool:
        return not self.broken and not self.writer.is_closing() and not self.reader.at_eof()

    async def reset(self) -> bool:
        try:
            return (await self._command(b"RSET", min(self.timeout, 30.0))).code == 250
        except (OSError, TimeoutError):
            self.broken = True
            return False

    async def quit(self) -> None:
        try:
            await self._command(b"QUIT", 5.0)
        finally:
            self.close()

    def close(self) -> None:
        self.broken = True
        if not self.writer.is_closing():
            self.writer.close()

    async def send(self, job: DeliveryJob, body: bytes) -> list[RecipientResult]:
        """One transaction; one result per recipient, in the job's order."""
        results: dict[str, RecipientResult] = {}
        if job.smtputf8 and "SMTPUTF8" not in self.extensions:
            reply = Reply(553, "5.6.7", f"SMTPUTF8 is required, but {self.peer} does not offer it")
            return [reply.result(r) for r in job.recipients]
        try:
            mail = b"MAIL FROM:" + path_bytes(job.sender)
        except ValueError as exc:
            return [Reply(553, "5.1.7", str(exc)).result(r) for r in job.recipients]
        if job.smtputf8:
            mail += b" SMTPUTF8"
        if job.body_8bit and "8BITMIME" in self.extensions:
            mail += b" BODY=8BITMIME"
        rcpts: list[tuple[str, bytes]] = []
        for rcpt in dict.fromkeys(job.recipients):
            try:
                rcpts.append((rcpt, b"RCPT TO:" + path_bytes(rcpt)))
            except ValueError as exc:
                results[rcpt] = Reply(553, "5.1.3", str(exc)).result(rcpt)
        stage = "sending MAIL FROM"
        try:
            pipelining = "PIPELINING" in self.extensions
            if pipelining:
                self._write(b"".join(line + b"\r\n" for line in [mail, *(c for _, c in rcpts)]))
            else:
                self._write(mail + b"\r\n")
            first = await self._reply()
            if first.code == 421:
                self.broken = True
                raise SessionFailure(first)
            stage = "sending RCPT TO"
            accepted: list[str] = []
            for rcpt, command in rcpts:
                if not pipelining:
                    if not first.ok:
                        break
                    self._write(command + b"\r\n")
                reply = await self._reply()
                if reply.ok and first.ok:
                    accepted.append(rcpt)
                else:
                    results[rcpt] = (reply if first.ok else first).result(rcpt)
            if not first.ok:
                return [first.result(r) if r not in results else results[r] for r in job.recipients]
            if accepted:
                stage = "sending DATA"
                reply = await self._command(b"DATA")
                if reply.code != 354:
                    for rcpt in accepted:
                        results[rcpt] = reply.result(rcpt)
                elif not self.recordable():
                    # The mailboxes would take it while its delivery could not be
                    # recorded: the transaction is left without its end.
                    self.close()
                    for rcpt in accepted:
                        results[rcpt] = NOT_RECORDABLE.result(rcpt)
                else:
                    stage = "sending message content"
                    self._write(dot_stuff(body))
                    await self.writer.drain()
                    for rcpt in accepted:
                        results[rcpt] = (await self._reply()).result(rcpt)
        except (OSError, TimeoutError) as exc:
            self.broken = True
            lost = lost_connection(self.peer, stage, exc)
            if stage == "sending MAIL FROM":
                raise SessionFailure(lost) from None
            for rcpt in job.recipients:
                results.setdefault(rcpt, lost.result(rcpt))
        if any(r.code == 421 for r in results.values()):
            self.broken = True
        return [results[r] for r in job.recipients]

    # -- wire ------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        if self.writer.is_closing():
            raise ConnectionResetError("connection closed")
        self.writer.write(data)

    async def _command(self, line: bytes, wait: float | None = None) -> Reply:
        self._write(line + b"\r\n")
        return await self._reply(wait)

    async def _reply(self, wait: float | None = None) -> Reply:
        code, lines = await self._read(wait)
        return Reply.parse(code, "\n".join(lines))

    async def _read(self, wait: float | None = None) -> tuple[int, list[str]]:
        if self.writer.transport.get_write_buffer_size():
            await self.writer.drain()
        lines: list[str] = []
        while True:
            try:
                raw = await asyncio.wait_for(self.reader.readline(), wait or self.timeout)
            except ValueError:  # longer than the stream's limit
                raise ProtocolError("reply line too long") from None
            if not raw.endswith(b"\n"):
                raise ConnectionResetError("connection closed by the server")
            if len(raw) < 4 or not raw[:3].isdigit() or raw[3:4] not in (b" ", b"-", b"\r"):
                raise ProtocolError(f"not an LMTP reply: {raw[:80]!r}")
            lines.append(raw[4:].rstrip(b"\r\n").decode("utf-8", "replace"))
            if len(lines) > _MAX_REPLY_LINES:
                raise ProtocolError("reply too long")
            if raw[3:4] != b"-":
                return int(raw[:3]), lines


class LmtpTransport(SessionTransport[LmtpSession]):
    """``lmtp:host:port`` routes."""

    def __init__(
        self,
        cfg: Config,
        resolver: Resolver,
        recordable: Callable[[], bool] = always_recordable,
    ) -> None:
        d = cfg.delivery
        super().__init__(
            resolver, Pool(d.max_connections_per_destination, d.idle_connection_timeout)
        )
        self.name = d.helo_name or cfg.server.hostname
        self.connect_timeout = d.connect_timeout
        self.command_timeout = d.command_timeout
        self.recordable = recordable

    async def deliver(self, job: DeliveryJob, body: bytes, route: Route) -> Delivery:
        return await self.send_to_hosts(job, body, [route.host], route.port)

    async def open(
        self, name: str, addr: str, port: int, tls: TlsRequirement | None = None
    ) -> LmtpSession:
        peer = peer_name(name, addr, port)
        return await LmtpSession.open(
            addr,
            port,
            peer,
            self.name,
            self.connect_timeout,
            self.command_timeout,
            self.recordable,
        )
