"""Service processes: starting them in their own session and log file, a pid file
each, readiness through ``/readyz``, following and tailing their logs."""

from __future__ import annotations

import ctypes
import http.client
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from .addresses import join_hostport, probe_host, split_hostport

_prctl = None
if sys.platform.startswith("linux"):
    try:
        _prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # pragma: no cover
        _prctl = None
_PR_SET_PDEATHSIG = 1


def _child_setup(parent: int) -> None:
    """In the child before exec: SIGTERM when the launcher dies (Linux)."""
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the launcher died before prctl took effect
            os._exit(1)


def spawn(cmd: list[str], log_path: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        log.write(f"==== {stamp} started by elemta run: {' '.join(cmd)}\n".encode())
        log.flush()
        parent = os.getpid()
        return subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # Ctrl-C reaches the launcher only; it stops them in order
            preexec_fn=(lambda: _child_setup(parent)) if _prctl is not None else None,
        )


def tail(path: Path, offset: int = 0, lines: int = 40) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            data = fh.read()
    except FileNotFoundError:
        return "(no log)"
    text = data.decode("utf-8", errors="replace").rstrip("\n")
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


@dataclass
class Child:
    """One service process (or nats-server) and where its output goes."""

    name: str  # log and display name: "queue", "delivery-1", "nats-server"
    service: str  # group in the stop order
    cmd: list[str]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    health: str = ""  # host:port with /readyz; empty: no health endpoint
    proc: subprocess.Popen[bytes] | None = None
    log_offset: int = 0
    follow_offset: int = 0
    ready: bool = False
    pid_file: Path | None = None  # <state_dir>/run/<name>.pid while it runs
    started_at: float = 0.0  # time.monotonic() of the last start

    def start(self) -> None:
        try:
            self.log_offset = self.log_path.stat().st_size
        except FileNotFoundError:
            self.log_offset = 0
        self.follow_offset = self.log_offset
        self.ready = False
        self.proc = spawn(self.cmd, self.log_path, self.env)
        self.started_at = time.monotonic()
        if self.pid_file is not None:
            self.pid_file.parent.mkdir(parents=True, exist_ok=True)
            self.pid_file.write_text(f"{self.proc.pid}\n")

    def respawn(self) -> None:
        """Start again after an exit (the supervisor's restart); no waiting."""
        self.start()

    def forget_pid(self) -> None:
        if self.pid_file is not None:
            self.pid_file.unlink(missing_ok=True)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check_ready(self) -> bool:
        if self.ready or not self.health:
            self.ready = True
            return True
        host, port = split_hostport(self.health)
        url = f"http://{join_hostport(probe_host(host), port)}/readyz"
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                self.ready = resp.status == 200
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError):
            # not an HTTP answer: the port is not the service's yet (a probe of a
            # port nothing listens on can connect to itself and read its own request)
            self.ready = False
        return self.ready

    def log_tail(self, lines: int = 40) -> str:
        return tail(self.log_path, self.log_offset, lines)

    def follow(self) -> list[str]:
        """New complete log lines since the last call (for --foreground-logs)."""
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(self.follow_offset)
                data = fh.read()
        except FileNotFoundError:
            return []
        end = data.rfind(b"\n")
        if end < 0:
            return []
        self.follow_offset += end + 1
        return data[: end + 1].decode("utf-8", errors="replace").splitlines()
