"""The api service's side of NATS: the connection, readiness, and the stores it uses.

:class:`Backend` connects in the background (the HTTP side answers at once:
``/healthz`` while NATS is unreachable, ``/readyz`` saying what is missing),
waits for the queue's streams, then opens the API key bucket, the audit
stream and the console's session bucket. Handlers get the pieces from it:
:meth:`Backend.js` for the reads in :mod:`.view`, :meth:`Backend.keys`,
:meth:`Backend.audit`, :meth:`Backend.sessions`; each raises
:class:`Unavailable` (answered 503) until it is ready.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from elemta.common.apikeys import KeyStore
from elemta.common.audit import AuditLog
from elemta.common.config import Config
from elemta.common.jetstream import EVENTS_STREAM, connect, disconnect, wait_for_streams

from .logins import PasswordLogins
from .sessions import SessionStore

__all__ = ["Backend", "Unavailable"]

log = logging.getLogger(__name__)


class Unavailable(Exception):
    """NATS cannot answer now (not connected, timed out, stream missing)."""


async def _cancel(task: asyncio.Task[None], patience: float = 5.0) -> None:
    """Cancel ``task`` and wait for it, cancelling again while it swallows the request.

    nats-py retries the first connection inside ``connect()``, and on Python 3.11
    ``asyncio.wait_for`` loses a cancellation that arrives as a connection
    attempt fails; one ``cancel()`` may never land.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + patience
    while not task.done() and loop.time() < deadline:
        task.cancel()
        await asyncio.wait({task}, timeout=0.1)
    if not task.done():
        log.warning("could not stop the NATS connection task")
        return
    if not task.cancelled() and task.exception() is not None:
        log.warning("NATS connection task failed: %r", task.exception())


class Backend:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.nc: NATS | None = None
        self._js: JetStreamContext | None = None
        self.streams_ready = False
        self._keys: KeyStore | None = None
        self._audit: AuditLog | None = None
        self._sessions: SessionStore | None = None
        self.logins = PasswordLogins(cfg)
        self._stop = asyncio.Event()
        self._waiter: asyncio.Task[None] | None = None

    # -- life cycle -------------------------------------------------------------

    async def start(self) -> None:
        self._waiter = asyncio.create_task(self._connect_and_wait())

    async def _connect_and_wait(self) -> None:
        self.nc = await connect(self.cfg, "elemta-api", stop=self._stop)
        self._js = js = self.nc.jetstream(timeout=self.cfg.nats.publish_timeout)
        await wait_for_streams(js, [EVENTS_STREAM], self._stop)
        while not self._stop.is_set():
            try:
                self._keys = await KeyStore.open(js)
                self._audit = await AuditLog.open(
                    js, self.cfg.api.audit_retention, self.cfg.nats.publish_timeout
                )
                self._sessions = await SessionStore.open(js, self.cfg.api.session_lifetime)
                break
            except Exception as exc:
                log.warning("key bucket or audit stream not ready, trying again: %r", exc)
                await asyncio.sleep(1.0)
        if not self._stop.is_set():
            self.streams_ready = True
            log.info("stream %s present; api ready", EVENTS_STREAM)

    async def close(self) -> None:
        self._stop.set()
        if self._waiter is not None:
            await _cancel(self._waiter)
        if self.nc is not None:
            await disconnect(self.nc)
        await self.logins.close()

    # -- readiness --------------------------------------------------------------

    def checks(self) -> dict[str, Callable[[], bool]]:
        """The readiness checks, by name (served on ``/readyz``)."""
        return {
            "nats": lambda: self.nc is not None and self.nc.is_connected,
            "streams": lambda: self.streams_ready,
        }

    def failing(self) -> list[str]:
        return [name for name, check in self.checks().items() if not check()]

    # -- the pieces -------------------------------------------------------------

    def js(self) -> JetStreamContext:
        bad = self.failing()
        if bad or self._js is None:
            raise Unavailable("not ready: " + ", ".join(bad))
        return self._js

    def keys(self) -> KeyStore:
        self.js()
        assert self._keys is not None
        return self._keys

    def audit(self) -> AuditLog:
        self.js()
        assert self._audit is not None
        return self._audit

    def sessions(self) -> SessionStore:
        self.js()
        assert self._sessions is not None
        return self._sessions
