"""One concurrency budget shared by the pull loops of the priority classes.

With priorities on, delivery pulls each stream through one consumer per class
(``high``, ``normal``, ``low``: see :mod:`elemta.common.names`), but has one
``delivery.concurrency`` for all of them. :class:`Budget` decides how many
messages each class's loop may ask for, so that when there is a backlog

* ``high`` gets every free slot first,
* a lower class waiting for slots still gets its *floor* (``priorities.normal_share``,
  ``priorities.low_share`` of the budget, at least one slot), whatever high does —
  low-priority mail moves, more slowly, and never starves;
* a class without a backlog holds nothing: the slots go to the others.

A class is *backlogged* while its last request came back full. A backlogged class
asks with ``no_wait`` (JetStream answers at once with what there is), so no slot
sits in an open request while another class waits. A class without a backlog
asks for one message with a long poll, outside the budget: that probe is how it
hears about new mail, and at most one message per idle class may run beyond the
budget for a moment.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Budget", "Grant"]


@dataclass
class Grant:
    n: int  # messages to ask for
    probe: bool  # a long poll outside the budget (the class has no backlog)


class Budget:
    """``total`` slots for the classes of ``order`` (highest first); ``shares``:
    the part of ``total`` each class keeps while it waits (its floor)."""

    def __init__(self, total: int, order: list[str], shares: dict[str, float]) -> None:
        self.total = total
        self.order = list(order)
        self.floor = {
            c: (max(1, math.floor(total * shares[c])) if shares.get(c) else 0) for c in order
        }
        self.running = dict.fromkeys(order, 0)
        self.asked = dict.fromkeys(order, 0)  # slots in the open request (no_wait)
        # Every class starts as if it had a backlog: one no_wait request tells.
        self.backlog = dict.fromkeys(order, True)
        self._changed = asyncio.Event()

    def used(self, c: str) -> int:
        return self.running[c] + self.asked[c]

    def allowance(self, c: str, want: int) -> int:
        """How many slots a backlogged class ``c`` may ask for now."""
        free = self.total - sum(self.used(o) for o in self.order)
        if free <= 0:
            return 0
        rank = self.order.index(c)
        # The floors of the other backlogged classes are theirs.
        keep = sum(
            max(0, self.floor[o] - self.used(o)) for o in self.order if o != c and self.backlog[o]
        )
        n = min(want, free - keep)
        if any(self.backlog[h] for h in self.order[:rank]):
            # A higher class has mail waiting: this one gets its floor only.
            n = min(n, self.floor[c] - self.used(c))
        return max(0, n)

    async def take(self, c: str, want: Callable[[], int], min_batch: int = 1) -> Grant:
        """Wait until ``c`` may ask for messages; how many, and how. ``want``: how
        many its loop could take now (asked again after every wait)."""
        if not self.backlog[c]:
            return Grant(1, probe=True)
        waited = False
        while True:
            wanted = want()
            n = self.allowance(c, wanted)
            if n > 0 and (n >= min(min_batch, wanted) or waited):
                self.asked[c] += n
                return Grant(n, probe=False)
            self._changed.clear()
            if n > 0:
                try:
                    await asyncio.wait_for(self._changed.wait(), 0.05)
                except TimeoutError:
                    waited = True
            else:
                await self._changed.wait()

    def arrived(self, c: str) -> None:
        """A message for ``c`` came in (from its request or its probe)."""
        self.asked[c] = max(0, self.asked[c] - 1)
        self.running[c] += 1

    def ended(self, c: str, full: bool) -> None:
        """``c``'s request is over: what it did not fill is free again."""
        self.backlog[c] = full
        self.asked[c] = 0
        self._changed.set()

    def done(self, c: str) -> None:
        """A message of ``c`` was handled."""
        self.running[c] = max(0, self.running[c] - 1)
        self._changed.set()
