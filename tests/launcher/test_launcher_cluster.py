"""``elemta run --nats-cluster 3``: three JetStream nodes, every stream and bucket
replicated three times, and a node killed under load loses nothing."""

from __future__ import annotations

import asyncio
import os
import re
import signal
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest

from elemta.common.names import (
    BODIES_BUCKET,
    DEFERRED_STREAM,
    DELIVERY_STREAM,
    EVENTS_STREAM,
    MESSAGES_STREAM,
    OUTCOMES_STREAM,
    STATE_BUCKET,
)
from elemta.launcher.cluster import NatsCluster, jetstream_healthy

from support.countingsink import CountingSink
from support.dnsserver import DnsServer, free_port
from support.elemta_run import Run, assert_all_stopped, write_config
from support.tokenload import TokenLoad

STREAMS = (
    MESSAGES_STREAM,
    DELIVERY_STREAM,
    OUTCOMES_STREAM,
    DEFERRED_STREAM,
    EVENTS_STREAM,
    f"KV_{STATE_BUCKET}",
    f"OBJ_{BODIES_BUCKET}",
)


@pytest.fixture
def counting_sink() -> Iterator[CountingSink]:
    sink = CountingSink().start()
    yield sink
    sink.stop()


async def _replicas_and_leader(url: str) -> tuple[dict[str, int], str]:
    nc = await nats.connect(url.split(","), connect_timeout=5)
    try:
        js = nc.jetstream(timeout=10)
        replicas = {}
        for name in STREAMS:
            info = await js.stream_info(name)
            replicas[name] = info.config.num_replicas or 1
        info = await js.stream_info(MESSAGES_STREAM)
        assert info.cluster is not None
        return replicas, str(info.cluster.leader)
    finally:
        await nc.close()


def test_a_monitor_port_that_answers_no_http_is_not_healthy(echo_port: int) -> None:
    # a probe of a port nothing listens on yet can connect to itself and read
    # its own request back: not healthy, and no exception that stops `elemta run`
    assert jetstream_healthy(echo_port) is False


def test_a_restarted_node_of_a_cluster_keeps_its_ports_and_rejoins(tmp_path: Path) -> None:
    cluster = NatsCluster(tmp_path / "cluster", 3)
    try:
        cluster.start()
        node = cluster.nodes[1]
        port = node.port
        node.stop(kill=True)
        assert all(jetstream_healthy(n.monitor_port) for n in (cluster.nodes[0], cluster.nodes[2]))
        node.respawn()
        cluster.wait_healthy(60)
        assert node.port == port and node.running
    finally:
        cluster.stop()


def test_three_nodes_replicate_every_stream_and_a_node_killed_under_load_loses_nothing(
    tmp_path: Path, runs: list[Run], dns_server: DnsServer, counting_sink: CountingSink
) -> None:
    config, cfg = write_config(
        tmp_path,
        dns_server.port,
        {
            "server": {"trusted_networks": ["127.0.0.0/8"]},
            "transport": {"routes": {"relay.test": f"smtp:[127.0.0.1]:{counting_sink.port}"}},
            "delivery": {"ack_wait": 10.0},
        },
    )
    run = Run(
        tmp_path,
        "--config",
        str(config),
        "--nats-port",
        str(free_port()),
        "--nats-cluster",
        "3",
        "--only",
        "policy,queue,delivery,ingress",
        "--delivery",
        "1",
        "--restart-delay",
        "2",
    )
    runs.append(run)
    out = run.wait_for("Press Ctrl-C to stop.", timeout=150)
    assert "embedded cluster of 3, streams replicated 3x" in out
    url = re.search(r"NATS\s+(\S+)", out).group(1)  # type: ignore[union-attr]
    assert len(url.split(",")) == 3
    replicas, leader = asyncio.run(_replicas_and_leader(url))
    assert replicas == dict.fromkeys(STREAMS, 3)

    smtp = int(cfg["ingress"]["listen"].rsplit(":", 1)[1])
    load = TokenLoad(smtp, 150, prefix="cluster", sessions=4).start()
    try:
        assert load.wait_accepted(40, 120), load.replies()
        # the node leading ELEMTA_MESSAGES, the worst one to lose
        node = f"nats-{leader.rsplit('-', 1)[1]}"
        pid = int((tmp_path / "var" / "run" / f"{node}.pid").read_text())
        os.kill(pid, signal.SIGKILL)
        run.wait_for(f"{node} (pid {pid}) killed by signal 9")
        assert load.wait(240), f"load did not finish: {load.accepted_count} accepted"
    finally:
        load.stop()
    accepted = load.accepted
    missing = counting_sink.wait_for(accepted, 240)
    counts = counting_sink.snapshot()
    duplicates = sum(n - 1 for n in counts.values() if n > 1)
    print(
        f"\nnode {node} killed under load: {len(accepted)} accepted, {len(missing)} lost, "
        f"{duplicates} duplicates; replies {dict(load.replies())}"
    )
    assert len(accepted) == 150
    assert not missing, sorted(missing)[:10]
    run.wait_for(f"{node} is ready again", timeout=120)

    assert run.ctrl_c(timeout=150) == 0, run.output
    assert_all_stopped(tmp_path, smtp)
