"""``/healthz``, ``/readyz`` and ``/metrics`` on a small asyncio HTTP listener.

Liveness says the event loop answers. Readiness asks the service's checks (its
NATS connection first of all) and answers 503 naming the checks that fail, so a
Kubernetes probe or an operator sees why a pod takes no traffic.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .config import split_hostport

__all__ = ["HealthServer"]

log = logging.getLogger(__name__)

Check = Callable[[], bool]


class HealthServer:
    def __init__(self, listen: str) -> None:
        self.host, self.port = split_hostport(listen)
        self.checks: dict[str, Check] = {}
        self._server: asyncio.AbstractServer | None = None

    def add_check(self, name: str, check: Check) -> None:
        self.checks[name] = check

    def failing(self) -> list[str]:
        bad = []
        for name, check in self.checks.items():
            try:
                ok = check()
            except Exception:
                ok = False
            if not ok:
                bad.append(name)
        return bad

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._handle, self.host or None, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 5)
            while (await asyncio.wait_for(reader.readline(), 5)) not in (b"\r\n", b"\n", b""):
                pass
            parts = line.decode("latin-1").split()
            path = parts[1].split("?")[0] if len(parts) > 1 else "/"
            if path == "/healthz":
                status, ctype, body = 200, "text/plain", b"ok\n"
            elif path == "/readyz":
                bad = self.failing()
                if bad:
                    status, ctype = 503, "text/plain"
                    body = ("not ready: " + ", ".join(bad) + "\n").encode()
                else:
                    status, ctype, body = 200, "text/plain", b"ready\n"
            elif path == "/metrics":
                status, ctype, body = 200, CONTENT_TYPE_LATEST, generate_latest()
            else:
                status, ctype, body = 404, "text/plain", b"not found\n"
            reason = {200: "OK", 404: "Not Found", 503: "Service Unavailable"}[status]
            writer.write(
                f"HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()
