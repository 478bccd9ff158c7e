"""Shared pieces of the relay benchmark: paths and addresses, logging, ports, the
``System`` interface that Postfix and Elemta implement."""

from __future__ import annotations

import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from support.dnsserver import free_port as free_port  # the test suite's, re-exported

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "bench" / "results"
SENDER = "bench@client.test"
RECIPIENT = "user@bench.test"
DOMAIN = "bench.test"
# Components that are the load, not the system under test.
LOAD_TOOLS = ("smtp-source", "smtp-sink", "bench (this process)")


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class BenchError(Exception):
    pass


def wait_port(port: int, timeout: float, alive: Callable[[], bool] = lambda: True) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if not alive():
                raise BenchError(f"process for port {port} exited") from None
            time.sleep(0.05)
    raise BenchError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


def human_size(n: int) -> str:
    if n % (1024 * 1024) == 0:
        return f"{n // (1024 * 1024)}MB"
    if n % 1024 == 0:
        return f"{n // 1024}KB"
    return f"{n}B"


class System:
    name = "system"
    smtp_port = 0

    def start(self) -> None: ...
    def stop(self) -> None: ...
    def pids(self) -> dict[int, str]:
        return {}

    def after(self) -> dict[str, Any]:
        return {}
