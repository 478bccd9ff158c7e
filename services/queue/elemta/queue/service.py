"""Wiring: the NATS connection, the streams and consumers, the loops, readiness."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from elemta.common.config import Config
from elemta.common.health import HealthServer
from elemta.common.jetstream import (
    BODIES_BUCKET,
    DELIVERY_STREAM,
    INTAKE_CONSUMER,
    MESSAGES_STREAM,
    MSG_SUBJECT,
    OUTCOME_SUBJECT,
    OUTCOMES_CONSUMER,
    OUTCOMES_STREAM,
    connect,
    delivery_consumer_config,
    disconnect,
    ensure_streams,
)
from elemta.common.pull import PullConsumer

from .bounce import Bouncer
from .control import Control
from .depth import DepthSampler
from .dispatch import Dispatcher
from .events import EventPublisher
from .intake import Intake
from .outcomes import Outcomes
from .routing import Router
from .scheduler import Scheduler
from .state import StateStore

__all__ = ["QueueService", "intake_consumer_config", "outcomes_consumer_config"]

log = logging.getLogger(__name__)

ACK_WAIT = 30.0  # seconds; handlers take milliseconds, a stuck one is retried after this
CONCURRENCY = 256  # intake or outcome messages handled at once, per consumer
RETRY_DELAY = 1.0  # seconds before a message whose handler failed is offered again


def intake_consumer_config() -> ConsumerConfig:
    return ConsumerConfig(
        durable_name=INTAKE_CONSUMER,
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.ALL,
        filter_subject=f"{MSG_SUBJECT}.>",
        ack_wait=ACK_WAIT,
        max_deliver=-1,
        max_ack_pending=20000,
        # Intake needs the envelope header and the sequence, never the body:
        # do not ship every message through the queue process.
        headers_only=True,
    )


def outcomes_consumer_config() -> ConsumerConfig:
    return ConsumerConfig(
        durable_name=OUTCOMES_CONSUMER,
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.ALL,
        filter_subject=f"{OUTCOME_SUBJECT}.>",
        ack_wait=ACK_WAIT,
        max_deliver=-1,
        max_ack_pending=20000,
    )


class QueueService:
    """The queue: owns the streams, takes messages in, schedules, retries, bounces."""

    def __init__(
        self,
        cfg: Config,
        health: HealthServer | None = None,
        stop: asyncio.Event | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cfg = cfg
        self.clock = clock  # epoch seconds; a test passes one it can move
        self.stop_event = stop
        self.nc: NATS | None = None
        self.js: JetStreamContext | None = None
        self.streams_ready = False
        self.scheduler: Scheduler | None = None
        self.dispatcher: Dispatcher | None = None
        self.intake: Intake | None = None
        self.outcomes: Outcomes | None = None
        self._loops: list[PullConsumer] = []
        self._control: Control | None = None
        self._depth: DepthSampler | None = None
        if health is not None:
            health.add_check("nats", lambda: self.nc is not None and self.nc.is_connected)
            health.add_check("streams", lambda: self.streams_ready)

    async def start(self) -> None:
        cfg = self.cfg
        self.nc = nc = await connect(cfg, "elemta-queue", stop=self.stop_event)
        self.js = js = nc.jetstream(timeout=cfg.nats.publish_timeout)
        await ensure_streams(js, cfg)
        await js.add_consumer(DELIVERY_STREAM, delivery_consumer_config(cfg))
        await js.add_consumer(MESSAGES_STREAM, intake_consumer_config())
        await js.add_consumer(OUTCOMES_STREAM, outcomes_consumer_config())
        self.streams_ready = True

        store = await StateStore.open(js)
        objects = await js.object_store(BODIES_BUCKET)
        events = EventPublisher(nc)
        bouncer = Bouncer(cfg, js, objects, events)
        self.dispatcher = dispatcher = Dispatcher(
            cfg, nc, js, store, events, bouncer, objects, self.clock
        )
        router = Router(cfg)
        self.scheduler = scheduler = Scheduler(js, store, dispatcher, cfg.queue.scheduler_interval)
        # Rebuild before any outcome can park a new job.
        await scheduler.rebuild()

        self.intake = intake = Intake(router, store, dispatcher, events)
        self.outcomes = outcomes = Outcomes(store, dispatcher, events)
        self._loops = [
            PullConsumer(
                nc,
                js,
                stream,
                consumer,
                handler,
                CONCURRENCY,
                ACK_WAIT,
                retry_delay=RETRY_DELAY,
            )
            for stream, consumer, handler in (
                (MESSAGES_STREAM, INTAKE_CONSUMER, intake.handle),
                (OUTCOMES_STREAM, OUTCOMES_CONSUMER, outcomes.handle),
            )
        ]
        for loop in self._loops:
            loop.start()
        scheduler.start()
        self._control = Control(nc, router, store, dispatcher, scheduler, events)
        await self._control.start()
        self._depth = DepthSampler(js, clock=self.clock)
        self._depth.start()
        log.info("queue started; %d deferred job(s) scheduled", len(scheduler))

    async def stop(self) -> None:
        """Stop fetching, finish what is in hand, then drain the connection."""
        if self._depth is not None:
            await self._depth.stop()
        if self._control is not None:
            await self._control.stop()
        grace = max(1.0, self.cfg.queue.drain_timeout - 6.0)  # within queue.drain_timeout
        await asyncio.gather(*(loop.stop(grace) for loop in self._loops))
        if self.scheduler is not None:
            await self.scheduler.stop()
        if self.nc is not None:
            await disconnect(self.nc, wait=2.0)
        self.streams_ready = False
