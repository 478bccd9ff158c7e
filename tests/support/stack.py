"""The whole Elemta system as separate processes, for end-to-end tests.

Each service runs as ``elemta serve <service> --config <file>`` from the installed
package, exactly as ``make run`` starts it, against the test's own nats-server and
DNS server.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import smtplib
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from .dnsserver import free_port

__all__ = ["ELEMTA", "ROOT", "ServiceProcess", "Stack", "toml_dumps"]

ROOT = Path(__file__).resolve().parents[2]

# The installed command (the console script beside this interpreter), as a user runs it.
ELEMTA = shutil.which("elemta", path=str(Path(sys.executable).parent)) or "elemta"


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {_toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(type(v))


def _is_table_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def toml_dumps(data: dict[str, dict[str, Any]]) -> str:
    out = []
    for section, values in data.items():
        out.append(f"[{section}]")
        for key, value in values.items():
            if isinstance(value, dict) or _is_table_list(value):
                continue
            out.append(f"{key} = {_toml_value(value)}")
        for key, value in values.items():
            if isinstance(value, dict):
                out.append(f"[{section}.{key}]")
                for k, v in value.items():
                    out.append(f"{json.dumps(k)} = {_toml_value(v)}")
            elif _is_table_list(value):
                for table in value:
                    out.append(f"[[{section}.{key}]]")
                    out.extend(f"{k} = {_toml_value(v)}" for k, v in table.items())
        out.append("")
    return "\n".join(out)


def _port_taken(log: str) -> bool:
    return "address already in use" in log or "Address already in use" in log


class ServiceProcess:
    def __init__(
        self, name: str, config: Path, log: Path, http_port: int, env: dict[str, str]
    ) -> None:
        self.name = name
        self.config = config
        self.log_path = log
        self.http_port = http_port
        self.env = env
        self.command = [ELEMTA, "serve", name, "--config", str(config)]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.command,
                stdout=log,
                stderr=log,
                env=self.env,
                cwd=str(ROOT),
            )

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.http_port}/readyz", timeout=1
            ) as r:
                return bool(r.status == 200)
        except (urllib.error.URLError, OSError, http.client.HTTPException):
            # HTTPException: another suite's server (an SMTP sink) holds the port
            # picked for our health address; ours then fails to bind and moves.
            return False

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/metrics", timeout=5) as r:
            return str(r.read().decode())

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        moves = 0
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                if moves < 3 and self._health_port_was_taken():
                    moves += 1
                    self._move_health_port()
                    continue
                raise RuntimeError(f"{self.name} exited {self.proc.returncode}:\n{self.log()}")
            if self.ready():
                return
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} not ready after {timeout}s:\n{self.log()}")

    def _health_port_was_taken(self) -> bool:
        """The port picked for health was free when picked and taken by the time the
        service bound it (other suites on the machine pick ports too)."""
        log = self.log()
        return (
            f"('127.0.0.1', {self.http_port}): address already in use" in log
            or f"cannot listen on 127.0.0.1:{self.http_port}: [Errno 98]" in log  # the api
        )

    def _move_health_port(self) -> None:
        self.http_port = free_port()
        key = (
            "ELEMTA_API_LISTEN" if self.name == "api" else f"ELEMTA_{self.name.upper()}_HTTP_LISTEN"
        )
        self.env[key] = f"127.0.0.1:{self.http_port}"
        self.proc = None
        self.start()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        code = self.proc.returncode
        self.proc = None
        return code

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-6000:]
        except FileNotFoundError:
            return ""


class Stack:
    """Config plus processes; ``start()`` brings up policy, queue, delivery and ingress."""

    def __init__(
        self,
        workdir: Path,
        nats_url: str,
        dns_port: int,
        overrides: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        self.workdir = workdir
        self.smtp_port = free_port()
        self.submission_port = free_port()
        self.submissions_port = free_port()
        self.policy_port = free_port()
        self.config: dict[str, dict[str, Any]] = {
            "server": {
                "hostname": "mx.elemta.test",
                "local_domains": ["local.test"],
                "trusted_networks": ["127.0.0.0/8"],
                "state_dir": str(workdir / "var"),
            },
            "nats": {"url": nats_url, "publish_timeout": 5.0},
            "ingress": {
                "listen": f"127.0.0.1:{self.smtp_port}",
                "http_listen": f"127.0.0.1:{free_port()}",
                "max_message_size": 1024 * 1024,
                "max_recipients": 10,
                "listeners": [
                    {"address": f"127.0.0.1:{self.submission_port}", "role": "submission"},
                    {"address": f"127.0.0.1:{self.submissions_port}", "role": "submissions"},
                ],
            },
            "policy": {
                "listen": f"127.0.0.1:{self.policy_port}",
                "address": f"127.0.0.1:{self.policy_port}",
                "http_listen": f"127.0.0.1:{free_port()}",
            },
            "queue": {
                "http_listen": f"127.0.0.1:{free_port()}",
                "retry_schedule": [1.0, 1.0, 2.0],
                "retry_jitter": 0.0,
                "lifetime": 300.0,
                "scheduler_interval": 0.2,
            },
            "delivery": {
                "http_listen": f"127.0.0.1:{free_port()}",
                "ack_wait": 5.0,
                "connect_timeout": 5.0,
                "command_timeout": 10.0,
                "idle_connection_timeout": 2.0,
            },
            "api": {"listen": f"127.0.0.1:{free_port()}"},
            "dns": {"nameservers": ["127.0.0.1"], "port": dns_port, "timeout": 3.0},
            "transport": {"routes": {}},
            "telemetry": {"log_level": "INFO", "log_format": "json"},
        }
        for section, values in (overrides or {}).items():
            self.config.setdefault(section, {}).update(values)
        self.config_path = workdir / "elemta.toml"
        self.processes: dict[str, ServiceProcess] = {}
        self.extra_processes: list[ServiceProcess] = []

    def write_config(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(toml_dumps(self.config))

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ELEMTA_")}
        env.update(extra)
        return env

    def service(self, name: str, **env: str) -> ServiceProcess:
        section = self.config[name]
        port = int(section["listen" if name == "api" else "http_listen"].rsplit(":", 1)[1])
        listen = env.get(f"ELEMTA_{name.upper()}_HTTP_LISTEN")
        if listen:
            port = int(listen.rsplit(":", 1)[1])
        log = self.workdir / f"{name}-{port}.log"
        return ServiceProcess(name, self.config_path, log, port, self.env(**env))

    @property
    def api_url(self) -> str:
        return "http://" + str(self.config["api"]["listen"])

    def start(self, *names: str) -> Stack:
        """Start the services (default: policy, queue, delivery, ingress; add "api")."""
        names = names or ("policy", "queue", "delivery", "ingress")
        for attempt in range(3):
            self.write_config()
            for name in names:
                proc = self.service(name)
                self.processes[name] = proc
                proc.start()
            try:
                for name in names:
                    self.processes[name].wait_ready()
                return self
            except RuntimeError as exc:
                # A port picked free was taken by another suite before the service
                # bound it: stop what started and try again on fresh ports.
                if attempt == 2 or not _port_taken(str(exc)):
                    raise
                for name in names:
                    self.processes.pop(name).stop()
                self._repick_ports()
        return self

    def _repick_ports(self) -> None:
        """New free ports for the SMTP and gRPC listeners the stack picked itself."""
        old_smtp, old_policy = self.smtp_port, self.policy_port
        ingress, policy = self.config["ingress"], self.config["policy"]
        if ingress.get("listen") == f"127.0.0.1:{old_smtp}":
            self.smtp_port = free_port()
            ingress["listen"] = f"127.0.0.1:{self.smtp_port}"
        for listener in ingress.get("listeners", []):
            role = listener.get("role")
            if role in ("submission", "submissions") and listener.get("address") == (
                f"127.0.0.1:{getattr(self, role + '_port')}"
            ):
                setattr(self, role + "_port", free_port())
                listener["address"] = f"127.0.0.1:{getattr(self, role + '_port')}"
        if policy.get("listen") == f"127.0.0.1:{old_policy}":
            self.policy_port = free_port()
            policy["listen"] = f"127.0.0.1:{self.policy_port}"
            if policy.get("address") == f"127.0.0.1:{old_policy}":
                policy["address"] = f"127.0.0.1:{self.policy_port}"

    def add_ingress(
        self, listeners: list[dict[str, Any]] | None = None
    ) -> tuple[ServiceProcess, int]:
        """A second ingress process on ports of its own (its SMTP port is returned),
        sharing NATS and policy with the first: what two replicas share."""
        smtp, health = free_port(), free_port()
        env = {
            "ELEMTA_INGRESS_LISTEN": f"127.0.0.1:{smtp}",
            "ELEMTA_INGRESS_HTTP_LISTEN": f"127.0.0.1:{health}",
            "ELEMTA_INGRESS_LISTENERS": json.dumps(listeners or []),
        }
        log = self.workdir / f"ingress-{health}.log"
        proc = ServiceProcess("ingress", self.config_path, log, health, self.env(**env))
        proc.start()
        proc.wait_ready()
        self.extra_processes.append(proc)  # stopped with the others
        return proc, smtp

    def add_delivery(self) -> ServiceProcess:
        port = free_port()
        proc = self.service("delivery", ELEMTA_DELIVERY_HTTP_LISTEN=f"127.0.0.1:{port}")
        proc.start()
        proc.wait_ready()
        self.extra_processes.append(proc)
        return proc

    def add_queue(self) -> ServiceProcess:
        """A second queue process (it stands by while the first holds the lease)."""
        port = free_port()
        proc = self.service("queue", ELEMTA_QUEUE_HTTP_LISTEN=f"127.0.0.1:{port}")
        proc.start()
        proc.wait_ready()
        self.extra_processes.append(proc)
        return proc

    def stop(self) -> None:
        for proc in [*self.extra_processes, *reversed(list(self.processes.values()))]:
            proc.stop()

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name} ---\n{p.log()}"
            for p in [*self.processes.values(), *self.extra_processes]
        )

    def smtp(self) -> smtplib.SMTP:
        return smtplib.SMTP("127.0.0.1", self.smtp_port, local_hostname="client.test", timeout=20)

    def send(self, sender: str, recipients: list[str], body: bytes | str) -> tuple[int, bytes]:
        """Send one message; return the final DATA reply."""
        with self.smtp() as s:
            s.ehlo()
            code, msg = s.mail(sender)
            assert code == 250, (code, msg)
            for rcpt in recipients:
                code, msg = s.rcpt(rcpt)
                assert code == 250, (code, msg)
            return s.data(body)
