"""The Elemta system under test: its own nats-server (JetStream, ``sync_interval:
always``) and the services as separate processes, ``elemta serve <svc>`` from the
installed package (``make install``).

(Not named ``elemta.py``: this directory comes first on ``sys.path``, where such a
module would hide the ``elemta`` package.)
"""

from __future__ import annotations

import argparse
import os
import subprocess
import time
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from metrics import histogram_quantile, http_get, metric_sum, parse_metrics
from procs import Procs
from util import DOMAIN, ROOT, BenchError, System, free_port, log, tail, wait_port

from elemta.launcher.failure import Failure
from elemta.launcher.natsserver import NatsServer

from support.dnsserver import DnsServer  # the test suite's loopback DNS server
from support.stack import ELEMTA, toml_dumps

SERVICES = ("policy", "queue", "delivery", "ingress")
START_ATTEMPTS = 3


def elemta_available() -> list[str]:
    """The services that ``elemta serve`` does not know (not installed)."""
    installed = {ep.name for ep in entry_points(group="elemta.services")}
    return [s for s in SERVICES if s not in installed]


class Elemta(System):
    """nats-server (JetStream, ``sync_interval: always``) plus the four services."""

    name = "elemta"

    def __init__(
        self, procs: Procs, workdir: Path, sink_port: int, args: argparse.Namespace
    ) -> None:
        self.procs = procs
        self.workdir = workdir
        self.sink_port = sink_port
        self.args = args
        self.smtp_port = free_port()
        self.nats_port = free_port()
        self.nats: NatsServer | None = None
        self.dns: Any = None
        # (kind, http port, process)
        self.services: list[tuple[str, int, subprocess.Popen[bytes]]] = []

    def _start_nats(self) -> None:
        # Elemta's own nats-server, as elemta run starts it (sync_interval: always),
        # with the memory an operator gives it (elemta run --nats-memory-limit).
        self.nats = NatsServer(
            self.workdir / "nats",
            self.nats_port,
            memory_limit=getattr(self.args, "nats_memory_limit", ""),
        )
        try:
            self.nats.start(timeout=15)
        except Failure as exc:  # a failed case, like any other start-up error
            raise BenchError(str(exc)) from None
        if self.nats.proc is not None:
            self.procs.items.append(self.nats.proc)  # stopped on Ctrl-C with the rest

    def _config(self) -> dict[str, dict[str, Any]]:
        a = self.args
        policy_port = free_port()
        per_process = max(1, -(-a.dest_concurrency // a.delivery))
        return {
            "server": {
                "hostname": "mx.elemta.bench.invalid",
                "local_domains": ["local.bench.invalid"],
                "trusted_networks": ["127.0.0.0/8"],
                "state_dir": str(self.workdir / "var"),
            },
            "nats": {"url": f"nats://127.0.0.1:{self.nats_port}", "publish_timeout": 10.0},
            "ingress": {
                "listen": f"127.0.0.1:{self.smtp_port}",
                "http_listen": f"127.0.0.1:{free_port()}",
                "max_message_size": 10 * 1024 * 1024,
                "max_recipients": 1000,
                "drain_timeout": 5.0,
            },
            "policy": {
                "listen": f"127.0.0.1:{policy_port}",
                "address": f"127.0.0.1:{policy_port}",
                "http_listen": f"127.0.0.1:{free_port()}",
            },
            "queue": {"http_listen": f"127.0.0.1:{free_port()}"},
            "delivery": {
                "http_listen": f"127.0.0.1:{free_port()}",
                "concurrency": a.concurrency,
                "max_connections_per_destination": per_process,
            },
            # A loopback DNS server that knows nothing: any lookup ends at once, on 127.0.0.1.
            "dns": {"nameservers": ["127.0.0.1"], "port": self.dns.port, "timeout": 2.0},
            "transport": {"routes": {DOMAIN: f"smtp:[127.0.0.1]:{self.sink_port}"}},
            "telemetry": {"log_level": a.log_level, "log_format": "json"},
            # --priorities: the three classes' consumers and budget, all mail normal
            "priorities": {"enabled": bool(getattr(a, "priorities", False))},
        }

    def start(self) -> None:
        """Start everything; when a port picked as free was taken meanwhile by another
        program on the machine (``Address already in use``), start again on new ports."""
        missing = elemta_available()
        if missing:
            raise BenchError(f"Elemta services not in the tree yet: {', '.join(missing)}")
        for attempt in range(1, START_ATTEMPTS + 1):
            try:
                self._start_once()
                return
            except BenchError as exc:
                text = str(exc).lower()
                taken = "already in use" in text or "cannot bind" in text
                if attempt == START_ATTEMPTS or not taken:
                    raise
                log(f"elemta: a port was taken meanwhile ({attempt}); starting on new ports")
                self.stop()
                self.smtp_port = free_port()
                self.nats_port = free_port()
                self.workdir = self.workdir.with_name(f"{self.workdir.name}-{attempt}")
                self.workdir.mkdir(parents=True, exist_ok=True)

    def _start_once(self) -> None:
        self.dns = DnsServer()
        self.dns.start()
        self._start_nats()
        cfg = self._config()
        config_path = self.workdir / "elemta.toml"
        config_path.write_text(toml_dumps(cfg))
        base_env = {k: v for k, v in os.environ.items() if not k.startswith("ELEMTA_")}
        plan: list[tuple[str, int, dict[str, str]]] = [
            ("policy", int(cfg["policy"]["http_listen"].rsplit(":", 1)[1]), {}),
            ("queue", int(cfg["queue"]["http_listen"].rsplit(":", 1)[1]), {}),
        ]
        for _ in range(self.args.delivery):
            port = free_port()
            plan.append(("delivery", port, {"ELEMTA_DELIVERY_HTTP_LISTEN": f"127.0.0.1:{port}"}))
        for _ in range(self.args.ingress):
            port = free_port()
            plan.append(("ingress", port, {"ELEMTA_INGRESS_HTTP_LISTEN": f"127.0.0.1:{port}"}))
        deadline = time.monotonic() + 90
        first_ingress = True
        for kind, port, extra in plan:
            if kind == "ingress" and not first_ingress:
                # The first ingress writes the self-signed TLS pair into state_dir; ingress
                # processes started together race on it (cert of one, key of the other).
                self._wait_ready(*self.services[-1], deadline)
            first_ingress = first_ingress and kind != "ingress"
            proc = self.procs.spawn(
                [ELEMTA, "serve", kind, "--config", str(config_path)],
                self.workdir / f"{kind}-{port}.log",
                env={**base_env, **extra},
                cwd=ROOT,
            )
            self.services.append((kind, port, proc))
        for kind, port, proc in self.services:
            self._wait_ready(kind, port, proc, deadline)
        wait_port(self.smtp_port, 10)

    def _wait_ready(
        self, kind: str, port: int, proc: subprocess.Popen[bytes], deadline: float
    ) -> None:
        while http_get(port, "/readyz", timeout=1)[0] != 200:
            if proc.poll() is not None:
                raise BenchError(
                    f"elemta.{kind} exited {proc.returncode}:\n"
                    + tail(self.workdir / f"{kind}-{port}.log")
                )
            if time.monotonic() > deadline:
                raise BenchError(
                    f"elemta.{kind} not ready:\n" + tail(self.workdir / f"{kind}-{port}.log")
                )
            time.sleep(0.1)

    def pids(self) -> dict[int, str]:
        out = {proc.pid: kind for kind, _, proc in self.services}
        if self.nats is not None and self.nats.proc is not None:
            out[self.nats.proc.pid] = "nats-server"
        return out

    def metrics(self) -> list[tuple[str, dict[str, str], float]]:
        samples = []
        for _, port, _ in self.services:
            samples += parse_metrics(http_get(port, "/metrics")[1])
        return samples

    def after(self) -> dict[str, Any]:
        s = self.metrics()
        out: dict[str, Any] = {
            "delivery_delivered": metric_sum(
                s, "elemta_delivery_recipients_total", status="delivered"
            ),
            "ingress_accepted": metric_sum(s, "elemta_ingress_messages_total", result="accepted"),
            "ingress_tempfail": metric_sum(s, "elemta_ingress_messages_total", result="tempfail"),
            "delivery_connections_opened": metric_sum(
                s, "elemta_delivery_connections_opened_total"
            ),
            "delivery_connections_reused": metric_sum(
                s, "elemta_delivery_connections_reused_total"
            ),
            "queue_intake": metric_sum(s, "elemta_queue_intake_total"),
            "queue_deferred": metric_sum(s, "elemta_queue_deferred_messages"),
        }
        for q in (0.5, 0.99):
            v = histogram_quantile(s, "elemta_ingress_accept_seconds", q)
            out[f"ingress_accept_p{int(q * 100)}_ms"] = None if v is None else round(v * 1000, 2)
        return out

    def stop(self) -> None:
        order = {"ingress": 0, "delivery": 1, "queue": 2, "policy": 3}
        for _, _, proc in sorted(self.services, key=lambda s: order[s[0]]):
            if proc.poll() is None:
                proc.terminate()
        for _, _, proc in self.services:
            self.procs.stop(proc, 20)
        self.services = []
        if self.nats is not None:
            self.procs.stop(self.nats.proc, 10)
        self.nats = None
        if self.dns is not None:
            self.dns.stop()
            self.dns = None
