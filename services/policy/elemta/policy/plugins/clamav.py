"""ClamAV: the message streamed to clamd with zINSTREAM.

A virus is rejected 554 5.7.1; a clean message gets ``X-Virus-Scanned``;
an unreachable clamd or an ERROR reply raises, and the plugin host turns that
into fail open (accept) or closed (451 4.7.1, the default for ClamAV).
"""

from __future__ import annotations

import asyncio
import struct
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ..checks import REJECT, Verdict
from .host import hookimpl

__all__ = ["ClamAV", "ClamdError", "Options", "factory"]

CHUNK = 64 * 1024


class ClamdError(RuntimeError):
    pass


class ClamAV:
    def __init__(self, address: str = "127.0.0.1:3310", timeout: float = 30.0) -> None:
        self.address = address
        self.timeout = timeout

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self.address.startswith("unix:"):
            return await asyncio.open_unix_connection(self.address[5:])
        host, _, port = self.address.rpartition(":")
        return await asyncio.open_connection(host.strip("[]"), int(port))

    @staticmethod
    async def _reply(reader: asyncio.StreamReader) -> bytes:
        """One reply, ``z``-command style: up to its NUL (or EOF)."""
        try:
            return await reader.readuntil(b"\0")
        except asyncio.IncompleteReadError as exc:
            return exc.partial
        except asyncio.LimitOverrunError:
            return await reader.read(4096)

    async def scan(self, data: bytes) -> str | None:
        """The virus name, or None if clean; raises ClamdError/OSError otherwise."""
        reader, writer = await asyncio.wait_for(self._open(), self.timeout)
        try:
            writer.write(b"zINSTREAM\0")
            for i in range(0, len(data), CHUNK):
                chunk = data[i : i + CHUNK]
                writer.write(struct.pack(">I", len(chunk)) + chunk)
                await writer.drain()
            writer.write(struct.pack(">I", 0))
            await writer.drain()
            reply = await asyncio.wait_for(self._reply(reader), self.timeout)
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except OSError:
                pass
        text = reply.rstrip(b"\0\n").decode("utf-8", "replace")
        _, sep, result = text.partition(": ")
        if not sep:
            raise ClamdError(f"unexpected clamd reply {text!r}")
        if result == "OK":
            return None
        if result.endswith(" FOUND"):
            return result[: -len(" FOUND")]
        raise ClamdError(f"clamd: {result}")

    @hookimpl
    async def check_data(
        self, session: dict[str, Any], sender: str, recipients: list[str], message: bytes
    ) -> Verdict | None:
        name = await self.scan(message)
        if name is not None:
            return Verdict(
                action=REJECT,
                code=554,
                enhanced="5.7.1",
                reason=f"Message rejected: virus found ({name})",
            )
        return Verdict(add_headers=[("X-Virus-Scanned", "ClamAV")])


class Options(BaseModel):
    """The ``clamav`` plugin's options."""

    model_config = ConfigDict(extra="forbid")

    address: str = Field("127.0.0.1:3310", description="clamd: host:port or unix:/path")
    timeout: float = Field(30.0, gt=0, description="Seconds to connect and to get the answer")


def factory(options: Options) -> ClamAV:
    return ClamAV(address=options.address, timeout=options.timeout)
