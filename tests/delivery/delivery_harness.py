"""Test harness: a delivery service in-process against a real nats-server, the test
playing ingress and queue.

``harness.start(**delivery_settings)`` runs :class:`DeliveryService`;
``harness.submit(...)`` stores a message as ingress does and publishes the job
as the queue does; ``harness.outcome(id)`` waits for the outcome in
ELEMTA_OUTCOMES.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nats
from nats.js.api import RawStreamMsg
from nats.js.errors import NotFoundError
from prometheus_client import REGISTRY

from elemta.common.config import Config, parse_route
from elemta.common.envelope import DeliveryJob, Envelope, Outcome, new_queue_id
from elemta.common.jetstream import (
    DELIVERY_CONSUMER,
    DELIVERY_STREAM,
    ENVELOPE_HEADER,
    FIRST_CONSUMER,
    MESSAGES_STREAM,
    OUTCOMES_STREAM,
    delivery_consumer_config,
    ensure_streams,
)
from elemta.delivery.service import DeliveryService

BODY = (
    b"From: Alice <alice@sender.test>\r\n"
    b"To: Bob <bob@example.test>\r\n"
    b"Subject: hello\r\n"
    b"Message-ID: <1@sender.test>\r\n"
    b"\r\n"
    b"Hello Bob,\r\n"
    b".a line that starts with a dot\r\n"
    b"bye\r\n"
)


def metric(name: str, labels: dict[str, str] | None = None) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def until(check: Callable[[], bool], within: float = 10.0) -> None:
    """Until ``check()`` is true; fails after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "not within the time"
        await asyncio.sleep(0.02)


class Harness:
    def __init__(self, nats_url: str, dns_port: int, tmp: Path) -> None:
        self.nats_url = nats_url
        self.dns_port = dns_port
        self.tmp = tmp
        self.services: list[DeliveryService] = []

    async def setup(self) -> None:
        self.nc = await nats.connect(self.nats_url)
        self.js = self.nc.jetstream()
        cfg = self.config()
        await ensure_streams(self.js, cfg)
        await self.js.add_consumer(DELIVERY_STREAM, delivery_consumer_config(cfg))

    def config(
        self,
        dns: dict[str, Any] | None = None,
        tlsrpt: dict[str, Any] | None = None,
        **delivery: Any,
    ) -> Config:
        settings: dict[str, Any] = {
            "http_listen": "127.0.0.1:0",
            "ack_wait": 5.0,
            "connect_timeout": 2.0,
            "command_timeout": 5.0,
            "idle_connection_timeout": 5.0,
            "maildir_root": str(self.tmp / "mail"),
        }
        settings.update(delivery)
        return Config.model_validate(
            {
                "server": {"hostname": "mx.elemta.test", "state_dir": str(self.tmp / "var")},
                "nats": {"url": self.nats_url, "publish_timeout": 2.0},
                "delivery": settings,
                "tlsrpt": tlsrpt or {},
                "dns": {
                    "nameservers": ["127.0.0.1"],
                    "port": self.dns_port,
                    "timeout": 2.0,
                    **(dns or {}),
                },
            }
        )

    async def start(
        self, cfg: Config | None = None, clock: Any = None, **delivery: Any
    ) -> DeliveryService:
        extra = {"clock": clock} if clock is not None else {}
        service = DeliveryService(cfg or self.config(**delivery), drain_grace=1.0, **extra)
        await service.start()
        self.services.append(service)
        return service

    async def store(
        self, sender: str, recipients: list[str], body: bytes = BODY
    ) -> tuple[str, int]:
        """Store a message as ingress does; return its queue id and stream sequence."""
        qid = new_queue_id()
        env = Envelope(qid, sender, recipients, time.time(), size=len(body))
        ack = await self.js.publish(
            f"elemta.msg.{qid}", body, headers={ENVELOPE_HEADER: env.to_header()}
        )
        return qid, ack.seq

    async def submit(
        self,
        route: str,
        recipients: list[str],
        sender: str = "alice@sender.test",
        body: bytes = BODY,
        domain: str = "",
        headers: dict[str, str] | None = None,
        **job: Any,
    ) -> str:
        """Store a message and publish its delivery job, as the queue does."""
        qid, seq = await self.store(sender, recipients, body)
        await self.publish_job(qid, seq, route, recipients, sender, domain, headers, **job)
        return qid

    async def publish_job(
        self,
        qid: str,
        seq: int,
        route: str,
        recipients: list[str],
        sender: str = "alice@sender.test",
        domain: str = "",
        headers: dict[str, str] | None = None,
        **job: Any,
    ) -> None:
        r = parse_route(route)
        domain = domain or recipients[0].rpartition("@")[2]
        dest = f"mx:{domain}" if r.kind == "mx" else r.key()
        dj = DeliveryJob(qid, dest, r.model_dump(), domain, sender, recipients, seq, **job)
        await self.js.publish(f"elemta.delivery.{qid}", dj.encode(), headers=headers)

    async def outcome_msg(self, qid: str, within: float = 10.0) -> RawStreamMsg:
        deadline = time.monotonic() + within
        while True:
            try:
                return await self.js.get_last_msg(OUTCOMES_STREAM, f"elemta.outcome.{qid}")
            except NotFoundError:
                if time.monotonic() > deadline:
                    raise AssertionError(f"no outcome for {qid} within {within}s") from None
                await asyncio.sleep(0.05)

    async def outcome(self, qid: str, within: float = 10.0) -> Outcome:
        raw = await self.outcome_msg(qid, within)
        assert raw.data is not None
        return Outcome.decode(raw.data)

    async def outcomes_stored(self) -> int:
        return (await self.js.stream_info(OUTCOMES_STREAM)).state.messages

    async def jobs_left(self) -> int:
        """Jobs still in ELEMTA_DELIVERY (acked ones leave the work queue)."""
        return (await self.js.stream_info(DELIVERY_STREAM)).state.messages

    async def consumer(self) -> Any:
        return await self.js.consumer_info(DELIVERY_STREAM, DELIVERY_CONSUMER)

    async def first_all_acked(self, within: float = 15.0) -> None:
        """Until every stored message is acked by delivery and none waits to be offered."""
        deadline = time.monotonic() + within
        while True:
            info = await self.js.consumer_info(MESSAGES_STREAM, FIRST_CONSUMER)
            if info.num_ack_pending == 0 and info.num_pending == 0:
                return
            assert time.monotonic() < deadline, "not acknowledged"
            await asyncio.sleep(0.05)

    async def delete_message(self, seq: int) -> None:
        await self.js.delete_msg(MESSAGES_STREAM, seq)

    async def close(self) -> None:
        for service in self.services:
            await service.stop()
        await self.nc.close()
