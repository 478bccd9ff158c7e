"""The queue depth in the status, read from a real nats-server's monitoring endpoint."""

from __future__ import annotations

import socket
import subprocess
import time
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
from support.natsserver import nats_server_binary


class MonitoredNats:
    """A nats-server with JetStream and its HTTP monitoring port (what KEDA reads too)."""

    def __init__(self, tmp: Path) -> None:
        self.port, self.monitor_port = free_port(), free_port()
        conf = tmp / "nats.conf"
        conf.write_text(
            f"listen: 127.0.0.1:{self.port}\nhttp: 127.0.0.1:{self.monitor_port}\n"
            f'jetstream {{ store_dir: "{tmp / "js"}" }}\n'
        )
        self.proc = subprocess.Popen(
            [nats_server_binary(), "-c", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 15
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.monitor_port), timeout=1):
                    break
            except OSError:
                assert time.monotonic() < deadline, "nats-server did not start"
                time.sleep(0.05)

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"


@pytest.fixture
def monitored_nats(tmp_path: Path) -> Iterator[MonitoredNats]:
    server = MonitoredNats(tmp_path)
    yield server
    server.proc.terminate()
    server.proc.wait(10)


async def store(server: MonitoredNats, count: int) -> None:
    nc = await nats.connect(server.url)
    js = nc.jetstream()
    await ensure_streams(js, Config())
    for i in range(count):
        await js.publish(f"elemta.msg.q{i}", b"message")
    await nc.close()


async def test_depth_is_the_number_of_stored_messages(monitored_nats: MonitoredNats) -> None:
    await store(monitored_nats, 3)
    assert await jsz_depth(f"127.0.0.1:{monitored_nats.monitor_port}") == 3


async def test_status_shows_the_queue_depth(
    operator: Harness, memo: kopf.Memo, monitored_nats: MonitoredNats
) -> None:
    await store(monitored_nats, 2)
    endpoint = f"127.0.0.1:{monitored_nats.monitor_port}"
    memo.operator.queue_depth = lambda cluster: jsz_depth(endpoint)
    await operator.submit({"hostname": "mx.example.org", "localDomains": ["example.org"]})
    assert (await operator.reconcile())["status"]["queueDepth"] == 2


async def test_depth_is_unknown_when_monitoring_does_not_answer() -> None:
    assert await jsz_depth(f"127.0.0.1:{free_port()}", wait=2) is None
