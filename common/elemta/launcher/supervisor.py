"""The supervisor: starts nats-server (one, or a cluster) and the services in
order, waits until they are ready, prints where everything is, restarts whatever
stops on its own (:mod:`.restart`) and stops everything in order on a signal."""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING

from .addresses import (
    concrete_addresses,
    configured_ports,
    join_hostport,
    next_free_port,
    probe_host,
    split_hostport,
)
from .cluster import NatsCluster
from .failure import Failure
from .mounts import discard_warning
from .natsserver import NatsServer, check_external, create_streams
from .processes import Child
from .restart import Backoff, Restarter

if TYPE_CHECKING:
    from elemta.common.config import Config

SERVICES = ("policy", "queue", "delivery", "ingress", "api")  # start order
STOP_ORDER = ("ingress", "api", "delivery", "queue", "policy")
SERVICES_GROUP = "elemta.services"  # what `elemta serve` runs


@dataclass
class Options:
    """What ``elemta run`` was asked for (see :mod:`elemta.cli.run`)."""

    config: str | None = None
    nats_url: str | None = None
    nats_port: int = 4222
    nats_cluster: int = 1
    nats_memory_limit: str = ""
    delivery: int = 2
    ingress: int = 1
    queue: int = 1
    only: list[str] | None = None
    foreground_logs: bool = False
    ready_timeout: float = 60.0
    stop_timeout: float = 30.0
    restart_delay: float = 1.0


class Launcher:
    def __init__(self, args: Options, cfg: Config) -> None:
        self.args = args
        self.cfg = cfg
        self.state_dir = Path(cfg.server.state_dir)
        self.log_dir = self.state_dir / "log"
        self.run_dir = self.state_dir / "run"
        self.children: list[Child] = []
        self.nats: NatsServer | None = None
        self.cluster: NatsCluster | None = None
        self.nats_url = ""
        self.restarter = Restarter(Backoff(first=args.restart_delay))
        # A plain flag, not a threading.Event: setting an Event from a signal
        # handler can deadlock on the lock its wait() holds.
        self.signals = 0
        self.only: list[str] = args.only or list(SERVICES)
        self.env_overrides: dict[str, str] = {}
        self._hurried = False

    # signals ---------------------------------------------------------------------

    @property
    def stopping(self) -> bool:
        return self.signals > 0

    def _on_signal(self, signum: int, frame: object) -> None:
        # Only count: printing here could re-enter a print of the main code.
        self.signals += 1

    def install_signals(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, self._on_signal)

    # start -----------------------------------------------------------------------

    def check_services(self) -> None:
        installed = {ep.name for ep in entry_points(group=SERVICES_GROUP)}
        missing = [svc for svc in self.only if svc not in installed]
        if missing:
            raise Failure(
                "cannot run " + ", ".join(missing) + " (not installed: no entry point in "
                f"{SERVICES_GROUP}); start a subset with --only, e.g. --only api"
            )

    @property
    def nats_nodes(self) -> list[NatsServer]:
        if self.cluster is not None:
            return list(self.cluster.nodes)
        return [self.nats] if self.nats is not None else []

    def start_nats(self) -> None:
        url = self.args.nats_url or os.environ.get("ELEMTA_NATS_URL", "")
        if url:
            self.nats_url = url
            check_external(url)
            return
        if self.args.nats_cluster > 1:
            self.cluster = NatsCluster(
                self.state_dir / "nats-cluster",
                self.args.nats_cluster,
                self.log_dir,
                first_port=self.args.nats_port,
                memory_limit=self.args.nats_memory_limit,
            )
            self.cluster.start(stopping=lambda: self.stopping)
            self.nats_url = self.cluster.url
        else:
            self.nats = NatsServer(
                self.state_dir / "nats",
                self.args.nats_port,
                self.log_dir / "nats-server.log",
                fallback=True,
                memory_limit=self.args.nats_memory_limit,
            )
            self.nats.start(stopping=lambda: self.stopping)
            self.nats_url = self.nats.url
        store = self.state_dir / ("nats-cluster" if self.cluster is not None else "nats")
        warning = discard_warning(store)
        if warning:
            print(f"elemta: warning: {warning}", file=sys.stderr, flush=True)
        first = self.nats_nodes[0]
        if first.moved_from is not None:
            print(
                f"elemta: port {first.moved_from} is in use (another NATS server?); "
                f"the embedded nats-server listens on 127.0.0.1:{first.port}",
                flush=True,
            )
        for node in self.nats_nodes:
            node.pid_file = self.run_dir / f"{node.name}.pid"
            if node.proc is not None:
                node.pid_file.write_text(f"{node.proc.pid}\n")

    def replicas(self) -> int:
        """Stream replicas: the configured number, or every node of the embedded
        cluster (at most 5) when the configuration keeps the default of 1."""
        if self.cluster is not None and self.cfg.nats.replicas == 1:
            return min(5, len(self.cluster.nodes))
        return self.cfg.nats.replicas

    def ensure_streams(self) -> None:
        """Create the streams when the queue service, their owner, is not started."""
        if "queue" in self.only or self.args.nats_url or os.environ.get("ELEMTA_NATS_URL"):
            return
        nats = self.cfg.nats.model_copy(update={"replicas": self.replicas()})
        create_streams(self.nats_url, self.cfg.model_copy(update={"nats": nats}))

    def plan(self) -> None:
        """Decide every child's command, environment, log file and health address."""
        cfg = self.cfg
        taken = configured_ports(cfg)
        if self.nats_url.startswith("nats://127.0.0.1:"):
            taken.add(int(self.nats_url.rsplit(":", 1)[1]))
        self.env_overrides = concrete_addresses(cfg, taken)
        base_env = dict(os.environ)
        base_env["ELEMTA_NATS_URL"] = self.nats_url
        if self.cluster is not None:
            base_env["ELEMTA_NATS_REPLICAS"] = str(self.replicas())
        base_env.update(self.env_overrides)
        cmd_tail = ["--config", str(Path(self.args.config).resolve())] if self.args.config else []

        def address(env: str, value: str) -> str:
            return self.env_overrides.get(env, value)

        health = {
            "policy": address("ELEMTA_POLICY_HTTP_LISTEN", cfg.policy.http_listen),
            "queue": address("ELEMTA_QUEUE_HTTP_LISTEN", cfg.queue.http_listen),
            "delivery": address("ELEMTA_DELIVERY_HTTP_LISTEN", cfg.delivery.http_listen),
            "ingress": address("ELEMTA_INGRESS_HTTP_LISTEN", cfg.ingress.http_listen),
            "api": address("ELEMTA_API_LISTEN", cfg.api.listen),
        }
        counts = {
            "delivery": self.args.delivery,
            "ingress": self.args.ingress,
            "queue": self.args.queue,
        }
        for svc in SERVICES:
            if svc not in self.only:
                continue
            n = counts.get(svc, 1)
            host, base = split_hostport(health[svc])
            for i in range(n):
                env = dict(base_env)
                listen = health[svc]
                if i > 0:
                    port = next_free_port(base + i, taken, probe_host(host))
                    taken.add(port)
                    listen = join_hostport(host, port)
                    env[f"ELEMTA_{svc.upper()}_HTTP_LISTEN"] = listen
                name = f"{svc}-{i}" if n > 1 else svc
                self.children.append(
                    Child(
                        name,
                        svc,
                        [sys.executable, "-m", "elemta.cli", "serve", svc, *cmd_tail],
                        self.log_dir / f"{name}.log",
                        env,
                        listen,
                        pid_file=self.run_dir / f"{name}.pid",
                    )
                )

    def start_services(self) -> None:
        for child in self.children:
            child.start()

    @property
    def everyone(self) -> list[Child]:
        return [*self.nats_nodes, *self.children]

    def follow_logs(self) -> None:
        everyone = self.everyone
        if self.args.foreground_logs:
            width = max(len(c.name) for c in everyone)
            for child in everyone:
                for line in child.follow():
                    print(f"{child.name:<{width}} | {line}", flush=True)

    def watch(self) -> None:
        """While starting: raise :class:`Failure` when a child exited; print followed logs."""
        everyone = self.everyone
        if self.args.foreground_logs:
            width = max(len(c.name) for c in everyone)
            for child in everyone:
                for line in child.follow():
                    print(f"{child.name:<{width}} | {line}", flush=True)
        for child in everyone:
            if child.proc is not None and child.proc.poll() is not None:
                raise Failure(
                    f"{child.name} exited with status {child.proc.returncode}; "
                    f"the end of {child.log_path}:\n{child.log_tail()}"
                )

    def wait_ready(self) -> None:
        deadline = time.monotonic() + self.args.ready_timeout
        while True:
            self.watch()
            if all([c.check_ready() for c in self.children]):
                return
            if time.monotonic() > deadline:
                late = [c for c in self.children if not c.ready]
                raise Failure(
                    f"not ready after {self.args.ready_timeout:g} s: "
                    + ", ".join(c.name for c in late)
                    + "".join(f"\n--- the end of {c.log_path} ---\n{c.log_tail(20)}" for c in late)
                )
            if self.stopping:
                return
            time.sleep(0.2)

    def banner(self) -> str:
        cfg = self.cfg
        lines = ["Elemta is running:"]
        if "ingress" in self.only:
            smtp = self.env_overrides.get("ELEMTA_INGRESS_LISTEN", cfg.ingress.listen)
            n = self.args.ingress
            lines.append(f"  SMTP     {smtp} ({n} ingress process{'es' if n > 1 else ''})")
            for listener in cfg.ingress.listeners:
                what = {"submission": "STARTTLS", "submissions": "implicit TLS"}.get(
                    listener.role, "STARTTLS"
                )
                auth = ", AUTH" if listener.offers_auth else ""
                lines.append(f"  {listener.role:<8} {listener.address} ({what}{auth})")
        if "api" in self.only:
            api = self.env_overrides.get("ELEMTA_API_LISTEN", cfg.api.listen)
            host, port = split_hostport(api)
            lines.append(f"  API/UI   http://{join_hostport(probe_host(host), port)}/")
        if self.cluster is not None:
            where = (
                f"embedded cluster of {len(self.cluster.nodes)}, streams replicated "
                f"{self.replicas()}x, stores under {self.cluster.root}"
            )
        elif self.nats is not None:
            where = f"embedded, store {self.state_dir / 'nats'}"
        else:
            where = "external"
        lines.append(f"  NATS     {self.nats_url} ({where})")
        lines.append(f"  Maildir  {cfg.maildir_root}")
        lines.append("  Health   " + ", ".join(f"{c.name} {c.health}" for c in self.children))
        lines.append(f"  Logs     {self.log_dir}/ (pid files in {self.run_dir}/)")
        lines.append("A service that stops on its own is restarted. Press Ctrl-C to stop.")
        return "\n".join(lines)

    def run(self) -> int:
        self.install_signals()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        pid_file = self.run_dir / "elemta.pid"  # systemd's PIDFile=, as Postfix's master.pid
        pid_file.write_text(f"{os.getpid()}\n")
        try:
            self.check_services()
            self.start_nats()
            if self.stopping:
                return 0
            self.ensure_streams()
            self.plan()
            self.start_services()
            self.wait_ready()
            if not self.stopping:
                print(self.banner(), flush=True)
            while not self.stopping:
                self.follow_logs()
                self.restarter.poll(self.everyone)
                time.sleep(0.1)
            print("elemta: stopping", flush=True)
            return 0
        except Failure as exc:
            print(f"elemta: {exc}", file=sys.stderr, flush=True)
            return 1
        finally:
            self.shutdown()
            pid_file.unlink(missing_ok=True)

    # stop ------------------------------------------------------------------------

    def _stop_group(self, name: str, children: Sequence[Child]) -> None:
        running = [c for c in children if c.running]
        if not running:
            return
        for child in running:
            child.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        deadline = time.monotonic() + self.args.stop_timeout
        while any(c.running for c in running):
            if self.signals >= 2 or time.monotonic() > deadline:
                if self.signals >= 2 and not self._hurried:
                    self._hurried = True
                    print(
                        "elemta: second signal: killing what is left", file=sys.stderr, flush=True
                    )
                for child in running:
                    if child.running:
                        print(f"elemta: killing {child.name}", file=sys.stderr, flush=True)
                        child.proc.kill()  # type: ignore[union-attr]
                break
            if self.args.foreground_logs:
                for child in running:
                    for line in child.follow():
                        print(f"{child.name} | {line}", flush=True)
            time.sleep(0.05)
        for child in running:
            code = child.proc.wait()  # type: ignore[union-attr]
            if code not in (0, -signal.SIGTERM, -signal.SIGKILL):
                print(
                    f"elemta: {child.name} stopped with status {code}", file=sys.stderr, flush=True
                )

    def shutdown(self) -> None:
        for group in STOP_ORDER:
            self._stop_group(group, [c for c in self.children if c.service == group])
        self._stop_group("nats", self.nats_nodes)
        for child in self.everyone:
            child.forget_pid()
