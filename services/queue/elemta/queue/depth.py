"""Queue depth and the oldest message's age, for Prometheus.

Every accepted message stays in ``ELEMTA_MESSAGES`` until all its recipients
are final (the queue deletes its kept copy; first-attempt copies go in bulk
within a second or two of their end, :mod:`.reclaim`); so the stream's message
count is the number of messages in the queue, give or take those just ended,
and its first remaining message is the oldest one. Sampled every ``interval`` seconds (two JetStream API requests) rather than
counted per event, so the figures stay true across restarts and replicas.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from nats.errors import Error as NatsError
from nats.js import JetStreamContext

from elemta.common.jetstream import MESSAGES_STREAM
from elemta.common.tasks import cancel_and_wait

from .metrics import OLDEST_AGE, QUEUED

__all__ = ["DepthSampler"]

log = logging.getLogger(__name__)


class DepthSampler:
    def __init__(
        self,
        js: JetStreamContext,
        interval: float = 15.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.js = js
        self.interval = interval
        self.clock = clock
        self._task: asyncio.Task[None] | None = None

    async def sample(self) -> None:
        info = await self.js.stream_info(MESSAGES_STREAM)
        QUEUED.set(info.state.messages)
        if not info.state.messages:
            OLDEST_AGE.set(0)
            return
        first = await self.js.get_msg(MESSAGES_STREAM, seq=info.state.first_seq)
        if first.time is not None:
            OLDEST_AGE.set(max(0.0, self.clock() - first.time.timestamp()))

    async def _run(self) -> None:
        while True:
            try:
                await self.sample()
            except (TimeoutError, NatsError) as exc:
                log.debug("queue depth not sampled: %s", exc)
            await asyncio.sleep(self.interval)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="queue-depth")

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None
