"""Wiring: the gRPC server, the NATS connection, readiness."""

from __future__ import annotations

import asyncio
import logging

import grpc
from nats.aio.client import Client as NATS

from elemta.common.config import Config
from elemta.common.health import HealthServer
from elemta.common.jetstream import connect
from elemta.rpc.policy.v1 import policy_pb2_grpc as pb_grpc

from .authcheck import Authentication
from .checks import Pipeline
from .grpc_api import PolicyServicer

__all__ = ["PolicyService"]

log = logging.getLogger(__name__)

MAX_MESSAGE = 64 * 1024 * 1024


class PolicyService:
    def __init__(self, cfg: Config, health: HealthServer, stop: asyncio.Event) -> None:
        self.cfg = cfg
        self.stop_event = stop
        self.pipeline = Pipeline([Authentication(cfg)])
        self.server: grpc.aio.Server | None = None
        self.nc: NATS | None = None
        self.port = 0
        health.add_check("grpc", lambda: self.server is not None)
        health.add_check("nats", lambda: self.nc is not None and self.nc.is_connected)

    async def start(self) -> None:
        self.nc = await connect(self.cfg, "elemta-policy", stop=self.stop_event)
        opts = [
            ("grpc.max_receive_message_length", MAX_MESSAGE),
            ("grpc.max_send_message_length", MAX_MESSAGE),
        ]
        server = grpc.aio.server(options=opts)
        pb_grpc.add_PolicyServiceServicer_to_server(PolicyServicer(self.pipeline), server)
        self.port = server.add_insecure_port(self.cfg.policy.listen)
        if not self.port:
            raise OSError(f"cannot bind policy.listen {self.cfg.policy.listen}")
        await server.start()
        self.server = server
        log.info("policy listening on %s", self.cfg.policy.listen)

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop(grace=5)
        if self.nc is not None:
            await self.nc.drain()
