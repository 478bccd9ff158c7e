"""Wiring of the ingress service: NATS, the stream, the policy channel, the listener."""

from __future__ import annotations

import asyncio
import logging

from nats.aio.client import Client as NATS

from elemta.common.config import Config
from elemta.common.health import HealthServer
from elemta.common.jetstream import MESSAGES_STREAM, connect, disconnect, wait_for_streams
from elemta.common.tlsfiles import GrpcClientTls

from .handoff import Handoff
from .policy_client import PolicyClient
from .server import IngressServer
from .transaction import MessageProcessor

__all__ = ["IngressService"]

log = logging.getLogger(__name__)


def policy_client_tls(cfg: Config) -> GrpcClientTls | None:
    """TLS towards policy when a CA or a client certificate is configured."""
    p = cfg.policy
    if not (p.tls_ca or p.client_cert):
        return None
    return GrpcClientTls(p.tls_ca, p.client_cert, p.client_key, p.tls_server_name)


class IngressService:
    """``start()`` / ``stop()`` for :func:`elemta.common.runtime.run_service`.

    Readiness: ``nats`` (connected), ``stream`` (``ELEMTA_MESSAGES`` exists; the
    queue service creates it, and until then DATA answers 451) and ``listener``.
    """

    def __init__(self, cfg: Config, health: HealthServer, stop: asyncio.Event) -> None:
        self.cfg = cfg
        self.stop_event = stop
        self.nc: NATS | None = None
        self.handoff = Handoff(cfg)
        self.policy = PolicyClient(
            cfg.policy.address,
            cfg.ingress.policy_timeout,
            cfg.ingress.max_message_size,
            tls=policy_client_tls(cfg),
        )
        self.processor = MessageProcessor(cfg, self.policy, self.handoff)
        self.server = IngressServer(cfg, self.processor)
        self._stream_task: asyncio.Task[None] | None = None
        health.add_check("nats", lambda: self.nc is not None and self.nc.is_connected)
        health.add_check("stream", lambda: self.handoff.stream_ready)
        health.add_check("listener", lambda: self.server.listening)

    @property
    def port(self) -> int:
        return self.server.port

    async def start(self) -> None:
        self.nc = await connect(self.cfg, "elemta-ingress", stop=self.stop_event)
        self.handoff.attach(self.nc)
        self._stream_task = asyncio.get_running_loop().create_task(self._wait_for_stream())
        await self.policy.open()
        await self.server.limits.attach(self.nc.jetstream())
        await self.server.start()

    async def _wait_for_stream(self) -> None:
        assert self.handoff.js is not None
        await wait_for_streams(self.handoff.js, [MESSAGES_STREAM], self.stop_event)
        if not self.stop_event.is_set():
            self.handoff.stream_ready = True
            log.info("stream %s is there; accepting mail", MESSAGES_STREAM)

    async def stop(self) -> None:
        await self.server.stop(self.cfg.ingress.drain_timeout)
        if self._stream_task is not None:
            self._stream_task.cancel()
        await self.policy.close()
        await self.handoff.close()
        if self.nc is not None:
            await disconnect(self.nc)
