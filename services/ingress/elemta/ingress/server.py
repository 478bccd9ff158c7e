"""The SMTP listeners: the listening sockets, the open sessions, and the drain.

``ingress.listen`` is the MTA port; ``ingress.listeners`` adds more, each with its
role: ``submission`` (STARTTLS, AUTH required before MAIL) and ``submissions``
(implicit TLS from the first byte, RFC 8314; AUTH required). Every listener
shares the sessions, the drain and the certificate (re-read when its files change).

Each socket is created with ``SO_REUSEPORT`` (``ingress.reuse_port``) so that
several ingress processes can share the SMTP port and the kernel spreads
connections across them. On stop the socket is closed first, so that no new
connection is accepted; sessions without an open transaction are told
``421 4.3.2 Service shutting down``; the others may finish their transaction
within ``ingress.drain_timeout`` and are told the same right after it.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from dataclasses import replace

from elemta.common.config import Config, split_hostport
from elemta.common.tlsfiles import ContextFollower

from . import metrics
from .protocol import IngressSMTP, Settings
from .relay import RelayControl
from .stages import StageChecks
from .tls import server_context
from .transaction import MessageProcessor

__all__ = ["IngressServer"]

log = logging.getLogger(__name__)


class IngressServer:
    def __init__(self, cfg: Config, processor: MessageProcessor) -> None:
        self.cfg = cfg
        self.processor = processor
        self.sessions: set[IngressSMTP] = set()
        self.tasks: set[asyncio.Task[str]] = set()
        self.draining = False
        self.port = 0
        self.ports: dict[str, int] = {}  # "role address" -> bound port
        self._servers: list[asyncio.AbstractServer] = []
        self._settings: Settings | None = None
        self._idle = asyncio.Event()
        self._tls_files: ContextFollower | None = None

    @property
    def listening(self) -> bool:
        return bool(self._servers) and all(s.is_serving() for s in self._servers)

    def _make_settings(self) -> Settings:
        ing = self.cfg.ingress
        relay = RelayControl(
            self.cfg.server.local_domains,
            self.cfg.server.trusted_networks,
            self.cfg.server.relay_domains,
        )
        return Settings(
            hostname=self.cfg.server.hostname,
            max_message_size=ing.max_message_size,
            max_recipients=ing.max_recipients,
            max_line_length=ing.max_line_length,
            command_timeout=ing.command_timeout,
            data_timeout=ing.data_timeout,
            processing_timeout=ing.policy_timeout + self.cfg.nats.publish_timeout * 4 + 30,
            tls_context=server_context(self.cfg),
            relay=relay,
            processor=self.processor,
            stages=StageChecks(self.processor.policy, relay),
            offers_auth=ing.auth_on_mta,
            auth_failure_delay=ing.auth_failure_delay,
            auth_max_failures=ing.auth_max_failures,
        )

    def _listeners(self, base: Settings) -> list[tuple[str, Settings]]:
        """(address, settings) of every listener, the MTA port first."""
        out = [(self.cfg.ingress.listen, base)]
        for listener in self.cfg.ingress.listeners:
            implicit = listener.role == "submissions"
            settings = replace(
                base,
                role=listener.role,
                implicit_tls=implicit,
                tls_context=None if implicit else base.tls_context,
                offers_auth=listener.offers_auth,
                requires_auth=listener.requires_auth,
            )
            out.append((listener.address, settings))
        return out

    async def _listen(self, address: str, settings: Settings, tls: ssl.SSLContext | None) -> int:
        host, port = split_hostport(address)
        loop = asyncio.get_running_loop()

        def factory() -> IngressSMTP:
            return IngressSMTP(settings, self, loop)

        server = await loop.create_server(
            factory,
            host or None,
            port,
            reuse_port=self.cfg.ingress.reuse_port,
            backlog=1024,
            ssl=tls,
        )
        self._servers.append(server)
        bound = int(server.sockets[0].getsockname()[1])
        self.ports[f"{settings.role} {address}"] = bound
        log.info("SMTP listening on %s (%s, port %d)", address, settings.role, bound)
        return bound

    async def start(self) -> None:
        self._settings = base = self._make_settings()
        for address, settings in self._listeners(base):
            tls = base.tls_context if settings.implicit_tls else None
            port = await self._listen(address, settings, tls)
            if not self.port:
                self.port = port
        ing = self.cfg.ingress
        if ing.tls_cert and settings.tls_context is not None:
            # A renewed certificate (a Secret updated in place) serves the next STARTTLS.
            self._tls_files = ContextFollower(settings.tls_context, ing.tls_cert, ing.tls_key)
            self._tls_files.start()

    # -- the SessionHost side ------------------------------------------------------

    def session_opened(self, session: IngressSMTP) -> None:
        self.sessions.add(session)
        self._idle.clear()
        metrics.CONNECTIONS.inc()
        metrics.SESSIONS.inc()
        if self.draining:  # accepted just before the socket closed
            session.goodbye()

    def session_closed(self, session: IngressSMTP) -> None:
        if session in self.sessions:
            self.sessions.discard(session)
            metrics.SESSIONS.dec()
        self._check_idle()

    def track(self, task: asyncio.Task[str]) -> None:
        self.tasks.add(task)
        self._idle.clear()

        def done(t: asyncio.Task[str]) -> None:
            self.tasks.discard(t)
            self._check_idle()

        task.add_done_callback(done)

    def _check_idle(self) -> None:
        if not self.sessions and not self.tasks:
            self._idle.set()

    # -- stop ------------------------------------------------------------------------

    async def _wait_idle(self, seconds: float) -> bool:
        self._check_idle()
        try:
            await asyncio.wait_for(self._idle.wait(), max(seconds, 0.0))
            return True
        except TimeoutError:
            return False

    async def stop(self, drain_timeout: float) -> None:
        """Stop accepting at once; let open transactions finish; then close the rest."""
        if self._tls_files is not None:
            await self._tls_files.stop()
        for server in self._servers:
            server.close()
        self.draining = True
        for session in list(self.sessions):
            if not session.in_transaction:
                session.goodbye()
        if self.sessions:
            log.info("draining %d SMTP sessions for up to %.0fs", len(self.sessions), drain_timeout)
        if not await self._wait_idle(drain_timeout):
            # Time is up. A message being stored is let finish (policy and
            # publish have their own timeouts); every other session is closed.
            for session in list(self.sessions):
                if not session.processing:
                    session.goodbye()
            assert self._settings is not None
            if not await self._wait_idle(self._settings.processing_timeout):
                for session in list(self.sessions):
                    session.abort()
                for task in list(self.tasks):
                    task.cancel()
                await self._wait_idle(1.0)
        for server in self._servers:
            await server.wait_closed()
        self._servers = []
        log.info("SMTP listener stopped")
