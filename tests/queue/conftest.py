"""Fixtures of the queue tests; the harness itself is in :mod:`queue_harness`."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from queue_harness import QueueHarness

from support.natsserver import NatsServer


@pytest.fixture
async def harness(nats_server: NatsServer) -> AsyncIterator[QueueHarness]:
    h = QueueHarness(nats_server)
    yield h
    await h.close()
