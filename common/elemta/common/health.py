"""``/healthz``, ``/readyz`` and ``/metrics``: one implementation for every service.

Liveness says the event loop answers. Readiness asks the service's checks (its
NATS connection first of all) and answers 503 naming the checks that fail, so a
Kubernetes probe or an operator sees why a pod takes no traffic. ``/metrics`` is
the process's Prometheus registry.

:class:`Health` holds the checks and adds the three routes to an aiohttp
application: the api service serves them on its own port. :class:`HealthServer`
is a :class:`Health` with a listener of its own on ``http_listen``, for the
services that speak no HTTP.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .config import split_hostport

__all__ = ["HEALTH_PATHS", "Check", "Health", "HealthServer"]

log = logging.getLogger(__name__)

Check = Callable[[], bool]
HEALTH_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


class Health:
    """Named readiness checks and the routes that report them."""

    def __init__(self) -> None:
        self.checks: dict[str, Check] = {}

    def add_check(self, name: str, check: Check) -> None:
        self.checks[name] = check

    def failing(self) -> list[str]:
        """The names of the checks that fail (a check that raises fails)."""
        bad = []
        for name, check in self.checks.items():
            try:
                ok = check()
            except Exception:
                ok = False
            if not ok:
                bad.append(name)
        return bad

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, request: web.Request) -> web.Response:
        bad = self.failing()
        if bad:
            return web.Response(status=503, text="not ready: " + ", ".join(bad) + "\n")
        return web.Response(text="ready\n")

    async def _metrics(self, request: web.Request) -> web.Response:
        resp = web.Response(body=generate_latest())
        resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return resp


class HealthServer(Health):
    """:class:`Health` on a listener of its own (``host:port``; port 0 picks one)."""

    def __init__(self, listen: str) -> None:
        super().__init__()
        self.host, self.port = split_hostport(listen)
        self._runner: web.AppRunner | None = None

    async def start(self) -> int:
        """Listen; return the port (the real one when 0 was asked for)."""
        app = web.Application()
        self.add_routes(app)
        runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=1)
        await runner.setup()
        site = web.TCPSite(runner, self.host or None, self.port)
        try:
            await site.start()
        except OSError:
            await runner.cleanup()
            raise
        self._runner = runner
        server = site._server  # aiohttp keeps the asyncio server here
        sockets = getattr(server, "sockets", None) or []
        if sockets:
            self.port = int(sockets[0].getsockname()[1])
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
