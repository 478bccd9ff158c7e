"""The fetch loop shared by intake and outcomes: batches, handled concurrently.

While messages flow it fetches up to ``batch`` at a time and handles the whole
batch with ``asyncio.gather``; when the consumer runs dry it falls back to a
one-message lingering pull, which returns as soon as anything arrives (a large
lingering pull would wait for its whole expiry before returning a short batch).

A handler that raises gets its message nak'ed with a short delay; the handlers
are idempotent, so a redelivery redoes only what is missing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from nats.aio.msg import Msg
from nats.js import JetStreamContext

__all__ = ["PullLoop"]

log = logging.getLogger(__name__)

IDLE_WAIT = 0.5  # seconds a one-message pull lingers; bounds the time stop() waits
BUSY_WAIT = 0.2  # seconds a batch pull may wait for more when the consumer runs dry
RETRY_DELAY = 1.0  # seconds before a failed message is offered again


class PullLoop:
    def __init__(
        self,
        name: str,
        sub: JetStreamContext.PullSubscription,
        handler: Callable[[Msg], Awaitable[None]],
        batch: int = 256,
    ) -> None:
        self.name = name
        self.sub = sub
        self.handler = handler
        self.batch = batch
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name=f"queue-{self.name}")

    async def stop(self) -> None:
        """Stop fetching; in-flight messages are finished before this returns."""
        self._stopping.set()
        if self._task is not None:
            await self._task
        # Unsubscribe before the connection drains: a pull subscription has no
        # callback, so anything still arriving on its inbox (late status replies to
        # the last pull) would keep drain() waiting for its whole timeout.
        try:
            await self.sub.unsubscribe()
        except Exception as exc:
            log.debug("%s: unsubscribe: %s", self.name, exc)

    async def run(self) -> None:
        busy = False
        while not self._stopping.is_set():
            try:
                if busy:
                    msgs = await self.sub.fetch(self.batch, timeout=BUSY_WAIT)
                else:
                    msgs = await self.sub.fetch(1, timeout=IDLE_WAIT)
            except TimeoutError:
                busy = False
                continue
            except Exception as exc:  # disconnected, or the server is restarting
                if self._stopping.is_set():
                    break
                log.warning("%s: fetch failed: %s", self.name, exc)
                await asyncio.sleep(0.5)
                continue
            busy = True
            await asyncio.gather(*(self._handle(m) for m in msgs))

    async def _handle(self, msg: Msg) -> None:
        try:
            await self.handler(msg)
        except Exception:
            log.exception("%s: handling %s failed; will retry", self.name, msg.subject)
            try:
                await msg.nak(delay=RETRY_DELAY)
            except Exception as exc:
                log.debug("nak failed: %s", exc)
