"""The queue depth in the status, read from a real nats-server's monitoring endpoint."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import kopf
import nats
import pytest
from operator_harness import Harness

from elemta.common.config import Config
from elemta.common.jetstream import ensure_streams
from elemta.operator.depth import jsz_depth

from support.dnsserver import free_port
from support.natsserver import NatsServer


@pytest.fixture
def monitored_nats(tmp_path: Path) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path / "nats", monitor_port=free_port())
    server.start()
    yield server
    server.stop()


async def store(server: NatsServer, count: int) -> None:
    nc = await nats.connect(server.url)
    js = nc.jetstream()
    await ensure_streams(js, Config())
    for i in range(count):
        await js.publish(f"elemta.msg.q{i}", b"message")
    await nc.close()


async def test_depth_is_the_number_of_stored_messages(monitored_nats: NatsServer) -> None:
    await store(monitored_nats, 3)
    assert await jsz_depth(f"127.0.0.1:{monitored_nats.monitor_port}") == 3


async def test_status_shows_the_queue_depth(
    operator: Harness, memo: kopf.Memo, monitored_nats: NatsServer
) -> None:
    await store(monitored_nats, 2)
    endpoint = f"127.0.0.1:{monitored_nats.monitor_port}"
    memo.operator.queue_depth = lambda cluster: jsz_depth(endpoint)
    await operator.submit({"hostname": "mx.example.org", "localDomains": ["example.org"]})
    assert (await operator.reconcile())["status"]["queueDepth"] == 2


async def test_depth_is_unknown_when_monitoring_does_not_answer() -> None:
    assert await jsz_depth(f"127.0.0.1:{free_port()}", wait=2) is None
