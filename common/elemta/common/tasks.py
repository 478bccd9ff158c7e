"""Stopping a background task for certain.

``task.cancel()`` followed by ``await task`` can wait for ever on Python 3.11: a
cancellation that arrives while ``asyncio.wait_for`` (used throughout nats-py)
is finishing is swallowed, and a ``while True`` loop then goes on. Cancelling
again until the task is done, within a bound, ends such loops.
"""

from __future__ import annotations

import asyncio
import logging
import time

log = logging.getLogger(__name__)


async def cancel_and_wait(task: asyncio.Task[object] | None, within: float = 5.0) -> None:
    """Cancel ``task`` and wait until it is done, cancelling again meanwhile, for at
    most ``within`` seconds; never raises what the task raised."""
    if task is None or task.done():
        return
    deadline = time.monotonic() + within
    while not task.done():
        task.cancel()
        left = deadline - time.monotonic()
        if left <= 0:
            log.warning("task %s did not stop within %.1f s", task.get_name(), within)
            return
        await asyncio.wait({task}, timeout=min(0.5, left))
    if not task.cancelled() and task.exception() is not None:
        log.debug("task %s ended with %r", task.get_name(), task.exception())
