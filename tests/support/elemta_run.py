"""``elemta run`` as a user runs it, for the tests of the launcher: its
configuration, the process in its own session, and checks on what it left."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from .dnsserver import free_port
from .stack import ELEMTA, toml_dumps

__all__ = [
    "Run",
    "assert_all_stopped",
    "http_status",
    "listening",
    "nats_port",
    "processes_mentioning",
    "write_config",
]


def write_config(
    tmp_path: Path, dns_port: int = 53, extra: dict[str, dict[str, Any]] | None = None
) -> tuple[Path, dict[str, dict[str, Any]]]:
    """A configuration on free ports under ``tmp_path``; ``extra`` adds keys per section."""
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
    for section, values in (extra or {}).items():
        config.setdefault(section, {}).update(values)
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
