"""Every child process the benchmark starts, and clean-up on Ctrl-C, SIGTERM, SIGHUP."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path
from typing import Any

from util import log


class Procs:
    """Every child process we start, so that all of them are stopped on the way out."""

    def __init__(self) -> None:
        self.items: list[subprocess.Popen[bytes]] = []

    def spawn(
        self,
        cmd: list[str],
        log_path: Path | None,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        stdout: int | None = None,
    ) -> subprocess.Popen[bytes]:
        out: Any = subprocess.DEVNULL
        if log_path is not None:
            out = open(log_path, "ab")  # noqa: SIM115 - closed by the child's exit
        try:
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=stdout if stdout is not None else out,
                stderr=out,
                env=env,
                cwd=str(cwd) if cwd else None,
                # Own session: a Ctrl-C at the terminal reaches only us; we stop them in order.
                start_new_session=True,
            )
        finally:
            if log_path is not None:
                out.close()
        self.items.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes] | None, timeout: float = 15.0) -> None:
        if proc is None:
            return
        if proc.poll() is None:
            try:
                proc.terminate()
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
            except ProcessLookupError:
                pass
        if proc in self.items:
            self.items.remove(proc)

    def stop_all(self) -> None:
        for proc in list(reversed(self.items)):
            try:
                self.stop(proc, timeout=10)
            except Exception as exc:  # keep cleaning up
                log(f"cannot stop pid {proc.pid}: {exc}")


def on_terminate() -> None:
    """SIGTERM and SIGHUP clean up like Ctrl-C (SIGINT) does."""

    def handler(signum: int, frame: object) -> None:
        # One is enough: a second Ctrl-C must not cut the clean-up short.
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        raise KeyboardInterrupt(f"signal {signum}")

    # SIGINT too: even when started with it ignored (a background job of a script).
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, handler)
