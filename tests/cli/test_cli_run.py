"""``elemta run`` (``make run``) as a user runs it: it starts nats-server and the
services, prints where they are, and stops all of them on Ctrl-C."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import smtplib
import socket
import subprocess
import sys
import threading
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats
import pytest

from elemta.common.config import Config, load_config
from elemta.common.jetstream import ensure_streams
from elemta.launcher.addresses import (
    concrete_addresses,
    configured_ports,
    next_free_port,
    split_hostport,
)

from support.dnsserver import DnsServer, free_port
from support.natsserver import NatsServer
from support.stack import ELEMTA, ROOT, toml_dumps


def write_config(tmp_path: Path, dns_port: int = 53) -> tuple[Path, dict[str, dict[str, Any]]]:
    smtp = free_port()
    policy = free_port()
    config: dict[str, dict[str, Any]] = {
        "server": {"hostname": "mx.elemta.test", "state_dir": str(tmp_path / "var")},
        "ingress": {
            "listen": f"127.0.0.1:{smtp}",
            "http_listen": f"127.0.0.1:{free_port()}",
        },
        "policy": {
            "listen": f"127.0.0.1:{policy}",
            "address": f"127.0.0.1:{policy}",
            "http_listen": f"127.0.0.1:{free_port()}",
        },
        "queue": {"http_listen": f"127.0.0.1:{free_port()}"},
        "delivery": {"http_listen": f"127.0.0.1:{free_port()}"},
        "dns": {"nameservers": ["127.0.0.1"], "port": dns_port, "timeout": 2.0},
        "api": {"listen": f"127.0.0.1:{free_port()}"},
        "telemetry": {"log_format": "text"},
    }
    path = tmp_path / "elemta.toml"
    path.write_text(toml_dumps(config))
    return path, config


class Run:
    """``elemta run`` in its own session, as a terminal's foreground job."""

    def __init__(self, tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> None:
        base = {k: v for k, v in os.environ.items() if not k.startswith("ELEMTA_")}
        self.proc = subprocess.Popen(
            [ELEMTA, "run", *args],
            cwd=str(tmp_path),
            env={**base, **(env or {})},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, text: str, timeout: float = 90.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.output:
                return self.output
            if self.proc.poll() is not None:
                self._reader.join(5)
                if text in self.output:
                    return self.output
                raise AssertionError(f"elemta run exited {self.proc.returncode}:\n{self.output}")
            time.sleep(0.05)
        raise AssertionError(f"no {text!r} after {timeout}s:\n{self.output}")

    def ctrl_c(self, timeout: float = 90.0) -> int:
        """SIGINT to the whole foreground process group, as a terminal's Ctrl-C."""
        os.killpg(self.proc.pid, signal.SIGINT)
        return self.wait(timeout)

    def wait(self, timeout: float = 90.0) -> int:
        code = self.proc.wait(timeout)
        self._reader.join(5)
        return code

    def kill(self) -> None:
        """Clean up after a failed test: an orderly stop, else SIGKILL (the children
        then get SIGTERM from the kernel, see elemta.launcher.processes)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def runs() -> Iterator[list[Run]]:
    started: list[Run] = []
    yield started
    for run in started:
        run.kill()


def processes_mentioning(text: str) -> list[str]:
    """Command lines of running processes that contain ``text`` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if text in cmdline and state != "Z":
            found.append(cmdline)
    return found


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError):
        return 0


def listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def nats_port(output: str) -> int:
    m = re.search(r"NATS\s+nats://127\.0\.0\.1:(\d+)", output)
    assert m, output
    return int(m.group(1))


def assert_all_stopped(tmp_path: Path, *ports: int) -> None:
    deadline = time.monotonic() + 10
    while processes_mentioning(str(tmp_path)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert processes_mentioning(str(tmp_path)) == []
    for port in ports:
        assert not listening(port), f"port {port} still open"


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="needs /proc")
def test_the_api_alone_starts_with_its_own_nats_server_and_ctrl_c_stops_both(
    tmp_path: Path, runs: list[Run]
) -> None:
    config, cfg = write_config(tmp_path)
    api = cfg["api"]["listen"]
    run = Run(tmp_path, "--config", str(config), "--only", "api", "--nats-port", str(free_port()))
    runs.append(run)
    out = run.wait_for("Press Ctrl-C to stop.")

    assert "Elemta is running" in out
    assert f"API/UI   http://{api}/" in out
    assert "(embedded" in out
    assert f"Maildir  {tmp_path / 'var' / 'mail'}" in out
    assert f"api {api}" in out
    assert http_status(f"http://{api}/readyz") == 200
    assert http_status(f"http://{api}/api/v1/queue") == 200  # the launcher made the streams
    nats = nats_port(out)
    assert listening(nats)
    conf = (tmp_path / "var" / "nats" / "nats.conf").read_text()
    assert "sync_interval: always" in conf
    assert "max_payload: 8MB" in conf
    assert f"listen: 127.0.0.1:{nats}" in conf
    assert (tmp_path / "var" / "nats" / "jetstream").is_dir()
    assert "api listening" in (tmp_path / "var" / "log" / "api.log").read_text()

    assert run.ctrl_c() == 0, run.output
    assert_all_stopped(tmp_path, nats, int(api.rsplit(":", 1)[1]))
    nats_log = (tmp_path / "var" / "log" / "nats-server.log").read_text()
    assert "Server Exiting" in nats_log
    api_log = (tmp_path / "var" / "log" / "api.log").read_text()
    assert "api stopped" in api_log


def test_when_the_default_nats_port_is_taken_the_embedded_server_picks_another(
    tmp_path: Path, runs: list[Run]
) -> None:
    config, cfg = write_config(tmp_path)
    with socket.socket() as occupier:  # plays a NATS server already on 4222
        occupier.bind(("127.0.0.1", 0))
        occupier.listen()
        taken = occupier.getsockname()[1]
        run = Run(tmp_path, "--config", str(config), "--only", "api", "--nats-port", str(taken))
        runs.append(run)
        out = run.wait_for("Press Ctrl-C to stop.")
        port = nats_port(out)
        assert port != taken
        assert f"port {taken} is in use" in out
        assert http_status(f"http://{cfg['api']['listen']}/readyz") == 200
        assert run.ctrl_c() == 0, run.output
    assert_all_stopped(tmp_path, port)


def test_with_a_nats_url_the_launcher_uses_that_server_and_starts_none(
    tmp_path: Path, runs: list[Run], nats_server: NatsServer
) -> None:
    work = tmp_path / "run"  # apart from the fixture's server, also under tmp_path
    work.mkdir()
    config, cfg = write_config(work)

    async def streams() -> None:  # the queue service elsewhere would have made them
        nc = await nats.connect(nats_server.url)
        await ensure_streams(nc.jetstream(), Config())
        await nc.close()

    asyncio.run(streams())
    run = Run(work, "--config", str(config), "--only", "api", "--nats-url", nats_server.url)
    runs.append(run)
    out = run.wait_for("Press Ctrl-C to stop.")
    assert f"NATS     {nats_server.url} (external)" in out
    assert not (work / "var" / "nats").exists()
    assert http_status(f"http://{cfg['api']['listen']}/readyz") == 200

    assert run.ctrl_c() == 0, run.output
    assert_all_stopped(work)
    assert nats_server.proc is not None and nats_server.proc.poll() is None


def test_a_service_that_exits_makes_the_launcher_show_its_log_and_stop_everything(
    tmp_path: Path, runs: list[Run]
) -> None:
    config, cfg = write_config(tmp_path)
    api_port = int(cfg["api"]["listen"].rsplit(":", 1)[1])
    with socket.socket() as occupier:
        occupier.bind(("127.0.0.1", api_port))
        occupier.listen()
        run = Run(
            tmp_path, "--config", str(config), "--only", "api", "--nats-port", str(free_port())
        )
        runs.append(run)
        assert run.wait() == 1
    assert "api exited with status 1" in run.output
    assert "cannot listen" in run.output  # the log tail
    assert_all_stopped(tmp_path)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux")
def test_when_the_launcher_is_killed_its_services_and_nats_server_stop_too(
    tmp_path: Path, runs: list[Run]
) -> None:
    config, _ = write_config(tmp_path)
    run = Run(tmp_path, "--config", str(config), "--only", "api", "--nats-port", str(free_port()))
    runs.append(run)
    nats = nats_port(run.wait_for("Press Ctrl-C to stop."))
    assert len(processes_mentioning(str(tmp_path))) == 3  # elemta run, api, nats-server

    run.proc.kill()
    run.wait()
    assert_all_stopped(tmp_path, nats)


def test_a_bad_configuration_exits_78_naming_the_key(tmp_path: Path, runs: list[Run]) -> None:
    config = tmp_path / "elemta.toml"
    config.write_text('[api]\nlisten = "nowhere"\n')
    run = Run(tmp_path, "--config", str(config))
    runs.append(run)
    assert run.wait() == 78
    assert "api.listen" in run.output
    assert not (tmp_path / "var").exists()


def test_an_unknown_service_in_only_is_a_usage_error(tmp_path: Path, runs: list[Run]) -> None:
    run = Run(tmp_path, "--only", "api,mailer")
    runs.append(run)
    assert run.wait() == 2
    assert "unknown service mailer" in run.output


def test_extra_instances_skip_ports_that_the_configuration_or_others_use() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert next_free_port(port, set()) != port
        chosen = next_free_port(port - 1, {port - 1})
        assert chosen not in (port - 1, port)
    cfg = load_config(env={"ELEMTA_DELIVERY_HTTP_LISTEN": "127.0.0.1:0"})
    taken = configured_ports(cfg)
    assert {9101, 9102, 9103, 8025, 2525, 7071} <= taken
    fixed = concrete_addresses(cfg, taken)
    host, port = split_hostport(fixed["ELEMTA_DELIVERY_HTTP_LISTEN"])
    assert host == "127.0.0.1" and port != 0


def test_the_example_configuration_lists_every_key_with_its_default() -> None:
    path = ROOT / "elemta.example.toml"
    assert load_config(path, env={}) == Config()
    data = tomllib.loads(path.read_text())
    for section, field in Config.model_fields.items():
        model = field.annotation
        assert isinstance(model, type)
        assert set(data[section]) == set(model.model_fields), section  # type: ignore[attr-defined]
    text = path.read_text()
    assert '# "example.org" = "smtp:[127.0.0.1]:2526"' in text
    assert '# ".corp.example" = "lmtp:mailstore:24"' in text


def test_the_whole_system_starts_answers_smtp_and_stops_on_ctrl_c(
    tmp_path: Path, runs: list[Run], dns_server: DnsServer
) -> None:
    config, cfg = write_config(tmp_path, dns_server.port)
    run = Run(tmp_path, "--config", str(config), "--nats-port", str(free_port()), "--delivery", "2")
    runs.append(run)
    out = run.wait_for("Press Ctrl-C to stop.", timeout=120)

    smtp = cfg["ingress"]["listen"]
    assert f"SMTP     {smtp} (1 ingress process)" in out
    health = dict(re.findall(r"([a-z]+(?:-\d)?) (127\.0\.0\.1:\d+)", out.split("Health", 1)[1]))
    assert set(health) >= {"policy", "queue", "delivery-0", "delivery-1", "ingress", "api"}
    assert health["delivery-0"] != health["delivery-1"]
    for name, address in health.items():
        assert http_status(f"http://{address}/readyz") == 200, name
    host, port = smtp.rsplit(":", 1)
    with smtplib.SMTP(host, int(port), timeout=10) as client:
        code, _ = client.ehlo("client.test")
        assert code == 250
    for name in ("policy", "queue", "delivery-0", "delivery-1", "ingress", "api"):
        assert (tmp_path / "var" / "log" / f"{name}.log").exists()

    nats = nats_port(out)
    assert run.ctrl_c(timeout=150) == 0, run.output
    assert_all_stopped(tmp_path, nats, int(port))
