"""Wiring: the NATS connection, the streams and consumers, the loops, readiness."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from elemta.common.config import Config
from elemta.common.envelope import FirstAttempt
from elemta.common.health import HealthServer
from elemta.common.jetstream import (
    BODIES_BUCKET,
    DELIVERY_STREAM,
    FIRST_CONSUMER,
    INTAKE_CONSUMER,
    MESSAGES_STREAM,
    OUTCOME_SUBJECT,
    OUTCOMES_CONSUMER,
    OUTCOMES_STREAM,
    connect,
    delivery_consumer_config,
    disconnect,
    ensure_streams,
    first_consumer_config,
    open_bucket,
)
from elemta.common.names import FAILED_BUCKET
from elemta.common.pull import PullConsumer
from elemta.common.routing import Router
from elemta.common.suspensions import Suspensions

from .bounce import Bouncer
from .control import Control
from .depth import DepthSampler
from .dispatch import Dispatcher
from .events import EventPublisher
from .intake import Intake
from .lease import Lease
from .leftovers import Leftovers
from .metrics import ACTIVE
from .outcomes import Outcomes
from .reclaim import Reclaimer
from .scheduler import Scheduler
from .state import StateStore

__all__ = ["QueueService", "ensure_consumers", "outcomes_consumer_config"]

log = logging.getLogger(__name__)

ACK_WAIT = 30.0  # seconds; handlers take milliseconds, a stuck one is retried after this
CONCURRENCY = 256  # intake or outcome messages handled at once, per consumer
RETRY_DELAY = 1.0  # seconds before a message whose handler failed is offered again


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


async def ensure_consumers(js: JetStreamContext, cfg: Config) -> None:
    """The consumers the queue owns: ``delivery`` and ``delivery-first`` (pulled by
    delivery), ``queue-outcomes`` (its own). A store from a version whose queue took
    messages in itself (consumer ``queue-intake``) is carried over: ``delivery-first``
    starts after the last message ``queue-intake`` finished, and that consumer goes.
    With priorities on, the high and low classes get their pair of consumers too
    (kept when priorities are turned off again: delivery drains them)."""
    await js.add_consumer(DELIVERY_STREAM, delivery_consumer_config(cfg))
    if cfg.priorities.enabled:
        for klass in ("high", "low"):
            await js.add_consumer(DELIVERY_STREAM, delivery_consumer_config(cfg, klass=klass))
            await js.add_consumer(MESSAGES_STREAM, first_consumer_config(cfg, klass=klass))
    await js.add_consumer(OUTCOMES_STREAM, outcomes_consumer_config())
    start = 0
    try:
        await js.consumer_info(MESSAGES_STREAM, FIRST_CONSUMER)
    except NotFoundError:
        try:
            old = await js.consumer_info(MESSAGES_STREAM, INTAKE_CONSUMER)
            start = int(old.ack_floor.stream_seq if old.ack_floor else 0) + 1
        except NotFoundError:
            pass
    await js.add_consumer(MESSAGES_STREAM, first_consumer_config(cfg, start))
    if start:
        await js.delete_consumer(MESSAGES_STREAM, INTAKE_CONSUMER)
        log.info("first attempts by delivery from stream sequence %d on", start)


class QueueService:
    """The queue: owns the streams, takes messages in, schedules, retries, bounces.

    Several processes may run; the one holding the lease (:mod:`.lease`) is
    *active* and does the work, the others stand by with the streams ensured and
    take over when its lease expires. :meth:`activate` and :meth:`deactivate`
    are the only places that start and stop the work."""

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
        self.lease: Lease | None = None
        self.active = False
        self.scheduler: Scheduler | None = None
        self.dispatcher: Dispatcher | None = None
        self.intake: Intake | None = None
        self.outcomes: Outcomes | None = None
        self._loops: list[PullConsumer] = []
        self._control: Control | None = None
        self.suspensions: Suspensions | None = None
        self._depth: DepthSampler | None = None
        self._leftovers: Leftovers | None = None
        self._reclaimer: Reclaimer | None = None
        self._lease_task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        if health is not None:
            health.add_check("nats", lambda: self.nc is not None and self.nc.is_connected)
            health.add_check("streams", lambda: self.streams_ready)

    async def start(self) -> None:
        """Connect, ensure the streams, then become active or stand by."""
        cfg = self.cfg
        self.nc = nc = await connect(cfg, "elemta-queue", stop=self.stop_event)
        self.js = js = nc.jetstream(timeout=cfg.nats.publish_timeout)
        await ensure_streams(js, cfg)
        await ensure_consumers(js, cfg)
        self.streams_ready = True

        self.lease = lease = Lease(js, cfg.queue.lease_time, cfg.nats.replicas)
        await lease.open()
        try:
            if await lease.acquire():
                await self.activate()
            else:
                holder = await lease.current()
                log.info("standing by: %s is the active queue process", holder or "another")
        except Exception as exc:  # the bucket's leader is being elected: try again soon
            log.info("lease not taken yet (%r); standing by", exc)
        self._lease_task = asyncio.create_task(self._hold_lease(), name="queue-lease")

    async def activate(self) -> None:
        """Start the work: rebuild the retry heap from ELEMTA_DEFERRED, then the
        consumers, the scheduler, operator requests and the depth sampler. A
        start that fails half-way (NATS gone meanwhile) is undone, to be tried
        again while the lease holds."""
        try:
            await self._activate()
        except BaseException:
            await self.deactivate(grace=1.0)
            raise

    async def _activate(self) -> None:
        cfg = self.cfg
        nc, js = self.nc, self.js
        assert nc is not None and js is not None
        store = await StateStore.open(js)
        objects = await js.object_store(BODIES_BUCKET)
        events = EventPublisher(nc)
        bouncer = Bouncer(cfg, js, objects, events)
        self.dispatcher = dispatcher = Dispatcher(
            cfg, nc, js, store, events, bouncer, objects, self.clock
        )
        dispatcher.failed = await open_bucket(js, FAILED_BUCKET, ttl=cfg.queue.failed_retention)
        router = Router(cfg)
        self.scheduler = scheduler = Scheduler(js, store, dispatcher, cfg.queue.scheduler_interval)
        # Rebuild before any outcome can park a new job.
        await scheduler.rebuild()

        self.outcomes = outcomes = Outcomes(store, dispatcher, events)
        self.intake = intake = Intake(router, store, dispatcher, events, outcomes)

        async def reported(msg: Msg) -> None:
            if FirstAttempt.is_first(msg.data):
                await intake.handle(msg)
            else:
                await outcomes.handle(msg)

        self._loops = [
            PullConsumer(
                nc,
                js,
                OUTCOMES_STREAM,
                OUTCOMES_CONSUMER,
                reported,
                CONCURRENCY,
                ACK_WAIT,
                retry_delay=RETRY_DELAY,
            )
        ]
        for loop in self._loops:
            loop.start()
        scheduler.start()
        self.suspensions = await Suspensions.open(js, self.clock)
        await self.suspensions.start()
        self._control = Control(
            nc, router, store, dispatcher, scheduler, events, self.suspensions, js
        )
        await self._control.start()
        self._depth = DepthSampler(js, clock=self.clock)
        self._depth.start()
        self._leftovers = Leftovers(nc, js, wait=cfg.nats.publish_timeout, clock=self.clock)
        self._leftovers.start()
        self._reclaimer = Reclaimer(nc, js, wait=cfg.nats.publish_timeout, clock=self.clock)
        self._reclaimer.start()
        self.active = True
        ACTIVE.set(1)
        holder = self.lease.holder if self.lease is not None else "this process"
        log.info("queue active (%s); %d deferred job(s) scheduled", holder, len(scheduler))

    async def deactivate(self, grace: float) -> None:
        """Stop the work: no more fetching, what is in hand gets ``grace`` seconds."""
        self.active = False
        ACTIVE.set(0)
        if self._depth is not None:
            await self._depth.stop()
            self._depth = None
        if self._leftovers is not None:
            await self._leftovers.stop()
            self._leftovers = None
        if self._reclaimer is not None:
            await self._reclaimer.stop()
            self._reclaimer = None
        if self._control is not None:
            await self._control.stop()
            self._control = None
        if self.suspensions is not None:
            await self.suspensions.stop()
            self.suspensions = None
        await asyncio.gather(*(loop.stop(grace) for loop in self._loops))
        self._loops = []
        if self.scheduler is not None:
            await self.scheduler.stop()

    async def _hold_lease(self) -> None:
        """Renew the lease while active, try to take it while standing by."""
        lease = self.lease
        assert lease is not None
        while not self._stopping.is_set():
            pause = lease.renew_every if self.active else lease.try_every
            try:
                await asyncio.wait_for(self._stopping.wait(), pause)
                return
            except TimeoutError:
                pass
            try:
                if self.active:
                    renewed: bool | None = await asyncio.wait_for(lease.renew(), pause)
                else:
                    if await asyncio.wait_for(lease.acquire(), pause):
                        log.info("took over the lease")
                        await self.activate()
                    continue
            except Exception as exc:  # NATS unreachable or slow: the lease may yet hold
                log.debug("lease not renewed: %s", exc)
                renewed = None
            if renewed is False or not lease.held:
                why = "another process holds it" if renewed is False else "cannot renew it"
                log.warning("standing by: lost the lease (%s)", why)
                await self.deactivate(grace=lease.renew_every)

    async def stop(self) -> None:
        """Stop fetching, finish what is in hand, then drain the connection."""
        self._stopping.set()
        if self._lease_task is not None:
            # an activation in progress is let finish, briefly, then stopped below
            _done, pending = await asyncio.wait({self._lease_task}, timeout=5.0)
            for task in pending:
                task.cancel()
                await asyncio.wait({task}, timeout=1.0)
        grace = max(1.0, self.cfg.queue.drain_timeout - 6.0)  # within queue.drain_timeout
        if self.active or self._loops:
            await self.deactivate(grace)
        if self.lease is not None and self.nc is not None and self.nc.is_connected:
            try:
                await asyncio.wait_for(self.lease.release(), 1.0)
            except Exception as exc:  # it expires on its own
                log.info("lease not released: %s", exc)
        if self.nc is not None:
            await disconnect(self.nc, wait=2.0)
        self.streams_ready = False
