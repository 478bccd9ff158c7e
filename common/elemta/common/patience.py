"""Trying again for a while: growing pauses until a deadline.

A NATS request that gets no answer while a cluster elects a leader or a node
comes back is worth repeating for some seconds (the same ``Nats-Msg-Id``, or a
read, makes a repeat harmless); after that the caller falls back to what it does
without an answer. Every such loop pauses the same way, here: 0.2 s, doubling up
to 2 s, and never sleeps past the deadline.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

__all__ = ["Patience"]


class Patience:
    """Pauses between tries for ``seconds`` from now."""

    def __init__(
        self,
        seconds: float,
        first: float = 0.2,
        most: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.clock = clock
        self.deadline = clock() + seconds
        self.next = first
        self.most = most

    async def pause(self) -> bool:
        """Sleep before the next try and return True; False, at once, when the pause
        would end past the deadline (give up)."""
        if self.clock() + self.next > self.deadline:
            return False
        await asyncio.sleep(self.next)
        self.next = min(self.most, self.next * 2)
        return True
