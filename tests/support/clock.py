"""A clock the test moves by hand, for code that takes ``clock: Callable[[], float]``
(greylisting, rate limits, the queue's retry schedule): hours pass in no time and
nothing depends on how busy the machine is."""

from __future__ import annotations

import time

__all__ = ["FakeClock"]


class FakeClock:
    def __init__(self, start: float | None = None) -> None:
        self.now = time.time() if start is None else start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
