"""No new attempt while the ends of earlier ones cannot be stored.

Between a destination's ``250`` and the stored end of that attempt (a history
record, or a report for the queue) the message is exposed: a delivery process
killed then leaves it to be offered again, and it is delivered a second time.
Normally that window is some milliseconds (about 10 ms on a busy 2-core
machine, ``bench/README.md``). When a stream cannot store (a node of the
cluster gone and its streams electing new leaders, which takes seconds; NATS
restarting), it lasts until the store succeeds, and a process that kept taking
new messages meanwhile would deliver every one of them into that window: the
crash figures of ``bench/chaos`` showed bursts of 40-60 copies from one
nats-server node killed and a delivery process killed a few seconds later.

So attempts are held back while an end has waited longer than :data:`STALL`,
and an attempt already under way sends no end of data then (the service's
``recordable`` check, as while NATS is unreachable: the peer delivers nothing
and the message is offered again): what had gone out finishes, nothing new
is sent. A message held is not exposed (nothing went out); the consumer keeps
telling JetStream it is in progress. The hold ends as soon as no end has waited
that long, and after :data:`HOLD_MAX` at most whatever happens, so that a store
that never returns cannot stop delivery for good (every store here is bounded
in time, but a hold must not depend on that).

The ends being stored are also written down on local disk first
(:mod:`.journal`), so that a process killed in that window leaves them to the
next one to store, instead of its messages to be delivered again.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Callable, Iterator

from .journal import EndJournal, Entry
from .metrics import HELD

__all__ = ["HOLD_MAX", "STALL", "Unrecorded"]

log = logging.getLogger(__name__)

# seconds an end may wait to be stored before new attempts wait for it: far above
# a store's usual milliseconds, far below a leader election's seconds
STALL = 0.25
# seconds an attempt waits at most; above the history record's patience (10 s)
HOLD_MAX = 15.0


class Unrecorded:
    """The attempts of this process whose end is being stored."""

    def __init__(
        self,
        stall: float | None = None,
        hold_max: float | None = None,
        clock: Callable[[], float] | None = None,
        journal: EndJournal | None = None,
    ) -> None:
        self.journal = journal
        self.stall = STALL if stall is None else stall
        self.hold_max = HOLD_MAX if hold_max is None else hold_max
        self._clock = clock
        self._since: dict[int, float] = {}  # in the order they began: oldest first
        self._ids = itertools.count()
        self._clear = asyncio.Event()
        self._clear.set()

    def _now(self) -> float:
        return self._clock() if self._clock else asyncio.get_running_loop().time()

    @contextlib.contextmanager
    def storing(self, entry: Entry | None = None) -> Iterator[None]:
        """Around storing the end of an attempt, whether it succeeds or not;
        ``entry``, the report of an attempt that delivered something, is written
        down first."""
        journal = self.journal
        written = journal.write(entry) if journal is not None and entry is not None else 0
        key = next(self._ids)
        self._since[key] = self._now()
        try:
            yield
        finally:
            if journal is not None and written:
                journal.settle(written)
            del self._since[key]
            if not self._clear.is_set() and not self.stalled():
                self._clear.set()

    def stalled(self) -> bool:
        """Whether an end has waited longer than :attr:`stall`."""
        for since in self._since.values():  # the oldest
            return self._now() - since > self.stall
        return False

    async def turn(self) -> None:
        """Return when a new attempt may go: at once unless :meth:`stalled`."""
        if not self.stalled():
            return
        HELD.inc()
        if self._clear.is_set():
            log.warning(
                "ends of delivered messages not stored for %.2fs; new attempts wait",
                self.stall,
            )
            self._clear.clear()
        try:
            await asyncio.wait_for(self._clear.wait(), self.hold_max)
        except TimeoutError:
            log.warning("an attempt waited %.0fs for ends to be stored; it goes", self.hold_max)
