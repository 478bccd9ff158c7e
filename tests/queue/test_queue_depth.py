"""Queue depth and the oldest message's age, as Prometheus sees them."""

from __future__ import annotations

import time

from queue_harness import QueueHarness

from elemta.queue.depth import DepthSampler
from elemta.queue.metrics import OLDEST_AGE, QUEUED


async def test_depth_counts_unfinished_messages_and_ages_the_oldest(harness: QueueHarness) -> None:
    await harness.start_queue()
    stored_at = time.time()
    await harness.store(["b@a.test"])
    await harness.store(["c@a.test"])
    sampler = DepthSampler(harness.js, clock=lambda: stored_at + 3600)

    await sampler.sample()

    assert QUEUED._value.get() == 2
    assert 3590 < OLDEST_AGE._value.get() < 3610


async def test_an_empty_queue_has_no_age(harness: QueueHarness) -> None:
    await harness.start_queue()
    sampler = DepthSampler(harness.js)
    await sampler.sample()
    assert QUEUED._value.get() == 0
    assert OLDEST_AGE._value.get() == 0
