"""The SMTP listeners: the listening sockets, the open sessions, and the drain.

``ingress.listen`` is the MTA port; ``ingress.listeners`` adds more, each with its
role: ``submission`` (STARTTLS, AUTH required before MAIL) and ``submissions``
(implicit TLS from the first byte, RFC 8314; AUTH required). Every listener
shares the sessions and the drain; each has its TLS level and certificate
(:mod:`.tlscontext`; re-read at the first handshake after its files change).

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
from collections.abc import Callable
from dataclasses import replace

from elemta.common.config import Config, split_hostport
from elemta.common.networks import Networks
from elemta.common.resolver import Resolver

from . import metrics
from .limits import ClientLimits
from .protocol import IngressSMTP
from .proxyproto import ProxyFront
from .relay import RelayControl
from .sessionparts import Settings
from .stages import StageChecks
from .tls import certificate_files
from .tlscontext import ListenerTls
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
        self.limits = ClientLimits(cfg.ingress, cfg.server.trusted_networks)
        self._servers: list[asyncio.AbstractServer] = []
        self._settings: Settings | None = None
        self._idle = asyncio.Event()

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
            tls_context=None,
            relay=relay,
            processor=self.processor,
            stages=StageChecks(self.processor.policy, relay),
            limits=self.limits if self.limits.active else None,
            resolver=Resolver(self.cfg.dns) if ing.client_name_lookup else None,
            client_name_timeout=ing.client_name_timeout,
            offers_auth=ing.auth_on_mta,
            auth_failure_delay=ing.auth_failure_delay,
            auth_max_failures=ing.auth_max_failures,
            mt_priority=self.cfg.priorities.enabled,
        )

    def _tls(self, address: str, role: str, level: str, cert: str, key: str) -> ListenerTls:
        cert, key = certificate_files(self.cfg, cert, key)
        return ListenerTls(f"{role} {address}", role, level, cert, key)

    def _listeners(self, base: Settings) -> list[tuple[str, Settings]]:
        """(address, settings) of every listener, the MTA port first."""
        ing = self.cfg.ingress
        tls = self._tls(ing.listen, "mta", ing.tls_level, "", "")
        out = [(ing.listen, replace(base, tls=tls, tls_context=tls.context))]
        for listener in ing.listeners:
            implicit = listener.role == "submissions"
            tls = self._tls(
                listener.address,
                listener.role,
                listener.tls_level,
                listener.tls_cert,
                listener.tls_key,
            )
            settings = replace(
                base,
                role=listener.role,
                implicit_tls=implicit,
                tls=tls,
                tls_context=None if implicit else tls.context,
                offers_auth=listener.offers_auth,
                requires_auth=listener.requires_auth,
            )
            out.append((listener.address, settings))
        return out

    async def _listen(
        self, address: str, settings: Settings, tls: ssl.SSLContext | None, proxy: bool
    ) -> int:
        host, port = split_hostport(address)
        loop = asyncio.get_running_loop()
        factory: Callable[[], asyncio.Protocol]
        if proxy:
            allowed = Networks(self.cfg.ingress.proxy_networks)

            def session(client: tuple[str, int] | None) -> IngressSMTP:
                return IngressSMTP(settings, self, loop, proxied=client)

            after_header = tls  # TLS starts after the header, not at accept

            def factory() -> asyncio.Protocol:
                return ProxyFront(session, allowed, self.cfg.server.hostname, after_header)

            tls = None
        else:

            def factory() -> asyncio.Protocol:
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
        log.info(
            "SMTP listening on %s (%s%s, port %d)",
            address,
            settings.role,
            ", PROXY protocol" if proxy else "",
            bound,
        )
        return bound

    async def start(self) -> None:
        self._settings = base = self._make_settings()
        proxies = [self.cfg.ingress.proxy_protocol] + [
            li.proxy_protocol for li in self.cfg.ingress.listeners
        ]
        for (address, settings), proxy in zip(self._listeners(base), proxies, strict=True):
            implicit = settings.tls.context if settings.implicit_tls and settings.tls else None
            port = await self._listen(address, settings, implicit, proxy)
            if not self.port:
                self.port = port

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
        await self.limits.close()
        log.info("SMTP listener stopped")
