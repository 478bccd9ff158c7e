"""Trying again for a while: pauses grow to a cap and never run past the deadline."""

from __future__ import annotations

import time

from elemta.common.patience import Patience


async def test_pauses_double_up_to_their_cap() -> None:
    patience = Patience(10.0, first=0.01, most=0.03)
    seen = []
    for _ in range(4):
        before = patience.next
        assert await patience.pause()
        seen.append(before)
    assert seen == [0.01, 0.02, 0.03, 0.03]


async def test_a_pause_that_would_end_past_the_deadline_gives_up_at_once() -> None:
    now = [100.0]
    patience = Patience(1.0, first=0.4, clock=lambda: now[0])
    now[0] = 100.7  # 0.3 s left, the next pause is 0.4 s
    started = time.monotonic()

    assert not await patience.pause()
    assert time.monotonic() - started < 0.1
