"""A JetStream cluster on this machine: ``elemta run --nats-cluster 3``, the tests
and ``bench/chaos``.

Three (or five) nats-servers on 127.0.0.1, each with its own store, client port,
route port and monitoring port, routed to one another. With streams replicated
three times (``nats.replicas = 3``) a PubAck means a majority of the nodes wrote
the message to disk (each node fsyncs, ``sync_interval: always``), so a ``250``
survives the loss of any one node; the services list every node in their NATS
URL and reconnect to a surviving one.

The cluster is ready when every node's ``/healthz`` says JetStream is current:
the nodes found one another and elected a metadata leader. A node restarted
later (:meth:`NatsServer.respawn`) keeps its ports and store and catches up
from its peers.
"""

from __future__ import annotations

import http.client
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from .addresses import any_free_port
from .failure import Failure
from .natsserver import NatsServer, Routes

__all__ = ["NatsCluster", "jetstream_healthy"]


def jetstream_healthy(monitor_port: int) -> bool:
    """True when the node's ``/healthz`` answers ``ok`` (JetStream current)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{monitor_port}/healthz", timeout=2) as r:
            return bool(json.loads(r.read() or b"{}").get("status") == "ok")
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError):
        return False


def _distinct_ports(n: int, taken: set[int]) -> list[int]:
    out: list[int] = []
    while len(out) < n:
        port = any_free_port()
        if port not in taken and port not in out:
            out.append(port)
    return out


class NatsCluster:
    """``size`` nats-servers named ``<name>-<i>``, stores in ``root/node-<i>``, logs
    in ``log_dir/nats-<i>.log`` (default: in each store). ``first_port`` is the
    first node's client port when free (as ``elemta run --nats-port``)."""

    def __init__(
        self,
        root: Path,
        size: int = 3,
        log_dir: Path | None = None,
        *,
        first_port: int | None = None,
        name: str = "elemta",
        memory_limit: str = "",
    ) -> None:
        if size < 1:
            raise ValueError("a cluster needs at least one node")
        self.root = Path(root)
        taken = {first_port} if first_port else set()
        route_ports = _distinct_ports(size, taken)
        monitor_ports = _distinct_ports(size, taken | set(route_ports))
        self.nodes: list[NatsServer] = []
        for i in range(size):
            routes = Routes(
                server_name=f"{name}-{i}",
                cluster_name=name,
                port=route_ports[i],
                peers=tuple(p for j, p in enumerate(route_ports) if j != i),
            )
            self.nodes.append(
                NatsServer(
                    self.root / f"node-{i}",
                    first_port if i == 0 else None,
                    (log_dir / f"nats-{i}.log") if log_dir else None,
                    fallback=True,
                    monitor_port=monitor_ports[i],
                    routes=routes,
                    name=f"nats-{i}",
                    memory_limit=memory_limit,
                )
            )

    @property
    def url(self) -> str:
        """Every node, comma-separated: the services' ``nats.url``."""
        return ",".join(node.url for node in self.nodes)

    def start(self, timeout: float = 60.0, stopping: Callable[[], bool] = lambda: False) -> None:
        """Start every node and wait until JetStream is current on each."""
        deadline = time.monotonic() + timeout
        for node in self.nodes:
            node.start(timeout=max(1.0, deadline - time.monotonic()), stopping=stopping)
        self.wait_healthy(max(1.0, deadline - time.monotonic()), stopping)

    def wait_healthy(
        self, timeout: float = 60.0, stopping: Callable[[], bool] = lambda: False
    ) -> None:
        """Until every running node reports JetStream current."""
        deadline = time.monotonic() + timeout
        while not stopping():
            waiting = [n for n in self.nodes if not jetstream_healthy(n.monitor_port)]
            if not waiting:
                return
            for node in waiting:
                if not node.running:
                    raise Failure(f"{node.name} exited:\n{node.log_tail()}")
            if time.monotonic() > deadline:
                raise Failure(
                    "JetStream cluster not ready in time: "
                    + ", ".join(n.name for n in waiting)
                    + "".join(f"\n--- {n.name} ---\n{n.log_tail(15)}" for n in waiting)
                )
            time.sleep(0.1)

    def stop(self, kill: bool = False) -> None:
        for node in self.nodes:
            node.stop(kill=kill)
