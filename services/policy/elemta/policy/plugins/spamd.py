"""SpamAssassin content scanning over the SPAMC/SPAMD protocol (1.5).

The message is sent to a spamd as ``SYMBOLS SPAMC/1.5`` (or ``CHECK``/``REPORT``)
with its ``Content-length`` and ``User``; spamd answers ``SPAMD/1.1 0 EX_OK``,
a ``Spam: True ; 1005.2 / 5.0`` header and, for ``SYMBOLS``, the comma-separated
names of the rules that hit.

Spam scoring at or above ``reject_score`` (when set) is rejected with
``550 5.7.1``; other spam is held (``hold=True``) or accepted with its headers.
Every scanned message gets ``X-Spam-Status`` (and ``X-Spam-Flag: YES`` if spam).

Failures (connection refused, a protocol error, a timeout) raise
:class:`SpamdError`; the plugin host decides whether that fails open or closed.
Messages larger than ``max_size`` are not scanned (no opinion), as spamc does.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..checks import ACCEPT, HOLD, REJECT, Verdict
from .host import hookimpl

__all__ = ["Options", "Spamd", "SpamdError", "SpamdResult", "factory", "parse_response"]

log = logging.getLogger(__name__)

COMMANDS = frozenset({"CHECK", "SYMBOLS", "REPORT"})
MAX_RESPONSE = 4 * 1024 * 1024


class SpamdError(RuntimeError):
    """spamd could not be reached or did not answer properly."""


@dataclass
class SpamdResult:
    spam: bool
    score: float
    required: float
    symbols: list[str] = field(default_factory=list)
    report: str = ""


def _split_address(address: str) -> tuple[str, int | None]:
    """``host:port``, ``[v6]:port``, ``host`` (port 783) or a unix socket path."""
    if address.startswith("/"):
        return address, None
    if address.startswith("["):
        host, _, rest = address[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    else:
        host, sep, port = address.rpartition(":")
        if not sep:
            host, port = address, ""
    try:
        return host, int(port) if port else 783
    except ValueError:
        raise ValueError(f"bad spamd address {address!r}") from None


def parse_response(raw: bytes, command: str = "SYMBOLS") -> SpamdResult:
    """Parse a complete spamd response; :class:`SpamdError` if it is not one."""
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep:
        head, sep, body = raw.partition(b"\n\n")
    lines = head.decode("latin-1").splitlines()
    if not lines:
        raise SpamdError("spamd closed the connection without an answer")
    status = lines[0].split(None, 2)
    if len(status) < 2 or not status[0].startswith("SPAMD/"):
        raise SpamdError(f"spamd sent a malformed status line: {lines[0]!r}")
    if status[1] != "0":
        raise SpamdError(f"spamd answered with an error: {lines[0]!r}")
    spam_header = None
    length = None
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        if name == "spam":
            spam_header = value.strip()
        elif name == "content-length":
            try:
                length = int(value.strip())
            except ValueError:
                raise SpamdError(f"spamd sent a bad Content-length: {line!r}") from None
    if spam_header is None:
        raise SpamdError(f"spamd sent no Spam header: {head[:200]!r}")
    try:
        flag, _, scores = spam_header.partition(";")
        score_s, _, required_s = scores.partition("/")
        spam = flag.strip().lower() in ("true", "yes")
        score, required = float(score_s), float(required_s)
    except ValueError:
        raise SpamdError(f"spamd sent a malformed Spam header: {spam_header!r}") from None
    if length is not None:
        if len(body) < length:
            raise SpamdError(f"spamd response truncated: {len(body)} of {length} bytes")
        body = body[:length]
    text = body.decode("utf-8", "replace")
    symbols: list[str] = []
    report = ""
    if command == "SYMBOLS":
        symbols = [s.strip() for s in text.split(",") if s.strip()]
    elif command == "REPORT":
        report = text
    return SpamdResult(spam, score, required, symbols, report)


class Spamd:
    """The ``data`` stage check backed by a spamd at ``address``."""

    def __init__(
        self,
        address: str = "127.0.0.1:783",
        timeout: float = 30.0,
        reject_score: float | None = None,
        hold: bool = True,
        user: str = "elemta",
        command: str = "SYMBOLS",
        max_size: int | None = 500 * 1024,
    ) -> None:
        command = command.upper()
        if command not in COMMANDS:
            raise ValueError(f"spamd command must be one of {sorted(COMMANDS)}, not {command!r}")
        self.address = address
        self.host, self.port = _split_address(address)
        self.timeout = timeout
        self.reject_score = reject_score
        self.hold = hold
        self.user = user
        self.command = command
        self.max_size = max_size

    async def scan(self, message: bytes) -> SpamdResult:
        """Send ``message`` to spamd and return its answer."""
        try:
            async with asyncio.timeout(self.timeout):
                return await self._exchange(message)
        except TimeoutError:
            raise SpamdError(
                f"spamd at {self.address} did not answer within {self.timeout:g}s"
            ) from None
        except OSError as exc:
            raise SpamdError(f"spamd at {self.address} unreachable: {exc}") from exc

    async def _exchange(self, message: bytes) -> SpamdResult:
        if self.port is None:
            reader, writer = await asyncio.open_unix_connection(self.host)
        else:
            reader, writer = await asyncio.open_connection(self.host, self.port)
        try:
            request = (
                f"{self.command} SPAMC/1.5\r\n"
                f"Content-length: {len(message)}\r\n"
                f"User: {self.user}\r\n\r\n"
            ).encode("ascii")
            writer.write(request + message)
            await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()
            raw = b""
            while chunk := await reader.read(65536):
                raw += chunk
                if len(raw) > MAX_RESPONSE:
                    raise SpamdError(f"spamd response larger than {MAX_RESPONSE} bytes")
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except OSError:
                pass
        return parse_response(raw, self.command)

    def verdict(self, result: SpamdResult) -> Verdict:
        tests = ",".join(result.symbols) or "none"
        status = (
            f"{'Yes' if result.spam else 'No'}, score={result.score:.1f} "
            f"required={result.required:.1f} tests={tests}"
        )
        headers = [("X-Spam-Status", status)]
        if result.spam:
            headers.append(("X-Spam-Flag", "YES"))
        if result.spam and self.reject_score is not None and result.score >= self.reject_score:
            return Verdict(
                action=REJECT,
                code=550,
                enhanced="5.7.1",
                reason="Message rejected as spam",
                add_headers=headers,
            )
        if result.spam and self.hold:
            return Verdict(action=HOLD, add_headers=headers)
        return Verdict(action=ACCEPT, add_headers=headers)

    @hookimpl
    async def check_data(
        self,
        session: dict[str, Any],
        sender: str,
        recipients: list[str],
        message: bytes | str,
    ) -> Verdict | None:
        data = message.encode("utf-8", "surrogateescape") if isinstance(message, str) else message
        if self.max_size is not None and len(data) > self.max_size:
            log.info("message of %d bytes not scanned by spamd (max %d)", len(data), self.max_size)
            return None
        result = await self.scan(data)
        log.debug(
            "spamd: spam=%s score=%.1f/%.1f %s",
            result.spam,
            result.score,
            result.required,
            ",".join(result.symbols),
        )
        return self.verdict(result)


class Options(BaseModel):
    """The ``spamd`` plugin's options."""

    model_config = ConfigDict(extra="forbid")

    address: str = Field("127.0.0.1:783", description="spamd: host:port or a socket path")
    timeout: float = Field(30.0, gt=0, description="Seconds for one scan")
    reject_score: float | None = Field(None, description="Spam at or above: 550 5.7.1")
    hold: bool = Field(True, description="Hold other spam (else accept with its headers)")
    user: str = Field("elemta", description="The User spamd scans as")
    command: str = Field("SYMBOLS", description="CHECK, SYMBOLS or REPORT")
    max_size: int | None = Field(500 * 1024, ge=1, description="Larger is not scanned")

    @field_validator("command")
    @classmethod
    def _command(cls, v: str) -> str:
        if v.upper() not in COMMANDS:
            raise ValueError(f"must be one of {sorted(COMMANDS)}")
        return v.upper()


def factory(options: Options) -> Spamd:
    """The built-in ``spamd`` plugin from its config options."""
    return Spamd(
        address=options.address,
        timeout=options.timeout,
        reject_score=options.reject_score,
        hold=options.hold,
        user=options.user,
        command=options.command,
        max_size=options.max_size,
    )
