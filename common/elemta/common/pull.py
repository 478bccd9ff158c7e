"""The one pull-consumer loop: messages from a durable consumer, ``concurrency`` at
a time. The queue reads its intake and outcomes with it, every delivery process
its jobs.

Each consumer is durable and may be shared (every delivery process pulls from
``delivery``; JetStream hands each message to one puller, so scaling out is
starting another process). The loop speaks JetStream's pull protocol directly on
its own inbox: it asks for as many messages as it has free slots
(``{"batch": n, "expires": ...}`` to ``$JS.API.CONSUMER.MSG.NEXT.<stream>.<consumer>``)
and starts handling each one the moment it arrives, rather than waiting for a
whole batch as ``fetch()`` does. A new request goes out when the previous one is
filled or expires, and only once a few slots are free, so a busy loop asks once
per batch, not per message.

While a handler runs, JetStream is told every ``ack_wait/3`` seconds that it is in
progress, so a slow peer never makes a message look abandoned. A handler that
raises gets its message nak'ed with ``retry_delay`` (handlers are idempotent: a
redelivery redoes only what is missing). On stop the loop stops asking, sends
back (nak) whatever still arrives, gives running handlers a grace period and
naks those still running after it, so that another process takes them at once
instead of after ``ack_wait``; every step is bounded in time, so a stop finishes
while NATS is unreachable too.

With a :class:`~elemta.common.budget.Budget` (priorities on), several loops — one
per priority class — share one concurrency: each asks the budget how many
messages it may ask for, and how (see :mod:`elemta.common.budget`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext

from .budget import Budget

__all__ = ["PullConsumer"]

log = logging.getLogger(__name__)

Handler = Callable[[Msg], Awaitable[None]]


@dataclass
class _Running:
    msg: Msg
    started: float


class PullConsumer:
    """Pull from ``stream``/``consumer`` (made by its owner, waited for here) and run
    ``handler`` on each message, at most ``concurrency`` at once. ``on_inflight``
    hears the number of messages in hand (a metric)."""

    def __init__(
        self,
        nc: NATS,
        js: JetStreamContext,
        stream: str,
        consumer: str,
        handler: Handler,
        concurrency: int,
        ack_wait: float,
        *,
        fetch_expires: float = 2.0,
        retry_delay: float = 5.0,
        on_inflight: Callable[[int], None] = lambda n: None,
        budget: Budget | None = None,
        klass: str = "",
    ) -> None:
        self.nc = nc
        self.js = js
        self.stream = stream
        self.consumer = consumer
        self.next_subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"
        self.handler = handler
        self.concurrency = concurrency
        self.ack_wait = ack_wait
        self.fetch_expires = fetch_expires
        self.retry_delay = retry_delay
        self.on_inflight = on_inflight
        self.budget = budget
        self.klass = klass  # the priority class this loop pulls, with a budget
        self.min_batch = max(1, min(16, concurrency // 8))
        self.bound = False
        self._running: dict[asyncio.Task[None], _Running] = {}
        self._slot_freed = asyncio.Event()
        self._request: asyncio.Future[str] | None = None
        self._requested = 0
        self._stopping = False
        self._inbox = ""
        self._sub: Subscription | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._keepalive_task: asyncio.Task[None] | None = None

    @property
    def inflight(self) -> int:
        return len(self._running)

    def start(self) -> None:
        name = f"pull-{self.consumer}"
        self._loop_task = asyncio.create_task(self._run(), name=name)
        self._keepalive_task = asyncio.create_task(self._keepalive(), name=f"{name}-keepalive")

    async def stop(self, grace: float = 10.0) -> None:
        """Stop pulling, let running handlers finish for ``grace`` seconds, nak the rest."""
        self._stopping = True
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        if self._sub is not None and not self.nc.is_closed:
            # what still arrives is nakked by _on_msg; with NATS gone this cannot
            # complete, so it gets a moment, not the whole grace period
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._sub.drain(), min(grace, 2.0))
        tasks = list(self._running)
        if tasks:
            log.info("%s: waiting up to %.0fs for %d in flight", self.consumer, grace, len(tasks))
            _done, pending = await asyncio.wait(tasks, timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=2.0)  # a nak that cannot be sent is dropped
                log.info("%s: returned %d unfinished to the stream", self.consumer, len(pending))
        if self._keepalive_task is not None:
            self._keepalive_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keepalive_task

    # -- binding ---------------------------------------------------------------

    async def _bind(self) -> None:
        """Wait until the queue service has created the consumer, then listen."""
        waited = False
        while not self._stopping:
            try:
                await self.js.consumer_info(self.stream, self.consumer)
                break
            except Exception as exc:
                if not waited:
                    log.info(
                        "waiting for consumer %s/%s (%s); the queue service creates it",
                        self.stream,
                        self.consumer,
                        type(exc).__name__,
                    )
                waited = True
                await asyncio.sleep(0.5)
        if self._stopping:
            return
        if self._sub is None:
            self._inbox = self.nc.new_inbox()
            self._sub = await self.nc.subscribe(self._inbox, cb=self._on_msg)
        self.bound = True
        log.info("bound to consumer %s/%s", self.stream, self.consumer)

    # -- pulling ---------------------------------------------------------------

    async def _run(self) -> None:
        while not self._stopping:
            if not self.bound:
                await self._bind()
                continue
            await self._wait_for_slots()
            free = self.concurrency - len(self._running)
            body: dict[str, object] = {"batch": free, "expires": int(self.fetch_expires * 1e9)}
            if self.budget is not None:
                grant = await self.budget.take(
                    self.klass, lambda: self.concurrency - len(self._running), self.min_batch
                )
                free = grant.n
                body = {"batch": free, "expires": int(self.fetch_expires * 1e9)}
                if not grant.probe:
                    body = {"batch": free, "no_wait": True}
            request: asyncio.Future[str] = asyncio.get_running_loop().create_future()
            self._request, self._requested = request, free
            status = ""
            try:
                await self.nc.publish(
                    self.next_subject, json.dumps(body).encode(), reply=self._inbox
                )
                status = await asyncio.wait_for(request, self.fetch_expires + 2.0)
            except TimeoutError:
                continue  # the request was lost (reconnect, server restart): ask again
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("pull request failed: %r", exc)
                await asyncio.sleep(0.5)
                continue
            finally:
                self._request = None
                if self.budget is not None:
                    self.budget.ended(self.klass, full=status == "full")
            if status in ("full", "404", "408"):
                continue
            if status == "503":  # no responders: the consumer is gone
                log.warning("consumer %s/%s disappeared", self.stream, self.consumer)
                self.bound = False
            else:  # 409: max ack pending reached, leader change, consumer deleted ...
                log.debug("pull request ended with status %s", status)
            await asyncio.sleep(0.25)

    async def _wait_for_slots(self) -> None:
        """Until ``min_batch`` slots are free, or at least one and a moment has passed."""
        waited = False
        while True:
            free = self.concurrency - len(self._running)
            if free >= self.min_batch or (free > 0 and (waited or not self._running)):
                return
            self._slot_freed.clear()
            if free > 0:
                try:
                    await asyncio.wait_for(self._slot_freed.wait(), 0.05)
                except TimeoutError:
                    waited = True
            else:
                await self._slot_freed.wait()

    async def _on_msg(self, msg: Msg) -> None:
        status = msg.headers.get("Status") if msg.headers else None
        if status:
            if status != "100" and self._request is not None and not self._request.done():
                self._request.set_result(status)
            return
        if self._stopping:
            with contextlib.suppress(Exception):
                await msg.nak()
            return
        if self.budget is not None:
            self.budget.arrived(self.klass)
        task = asyncio.create_task(self._handle(msg))
        self._running[task] = _Running(msg, time.monotonic())
        self.on_inflight(len(self._running))
        task.add_done_callback(self._handled)
        self._requested -= 1
        if self._requested <= 0 and self._request is not None and not self._request.done():
            self._request.set_result("full")

    async def _handle(self, msg: Msg) -> None:
        try:
            await self.handler(msg)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await msg.nak()  # shutting down: let another worker have it now
            raise
        except Exception:
            log.exception("%s: handling %s failed; will retry", self.consumer, msg.subject)
            with contextlib.suppress(Exception):
                await msg.nak(delay=self.retry_delay)

    def _handled(self, task: asyncio.Task[None]) -> None:
        if self._running.pop(task, None) is not None and self.budget is not None:
            self.budget.done(self.klass)
        self.on_inflight(len(self._running))
        self._slot_freed.set()

    # -- keeping long jobs alive -------------------------------------------------

    async def _keepalive(self) -> None:
        interval = max(1.0, self.ack_wait / 3)
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            for running in list(self._running.values()):
                if now - running.started >= interval / 2:
                    with contextlib.suppress(Exception):
                        await running.msg.in_progress()
