"""Counting at the final destination: ``smtp-sink -c`` and a reader of its counters."""

from __future__ import annotations

import os
import re
import subprocess
import threading
import time
from pathlib import Path

from procs import Procs
from util import free_port, wait_port


class Sink:
    """``smtp-sink -c``: the final destination; counts messages as their final "." arrives.

    With ``-c`` smtp-sink writes ``sess=N quit=N mesg=N`` after every event; a reader
    thread keeps the latest ``mesg`` and the time it first reached each count.
    """

    def __init__(self, procs: Procs, tools: dict[str, str], workdir: Path) -> None:
        self.procs = procs
        self.tools = tools
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.count = 0
        self.history: list[tuple[int, float]] = []
        self.cond = threading.Condition()
        self.reader: threading.Thread | None = None

    def start(self) -> Sink:
        cmd = [self.tools["smtp-sink"], "-c", "-m", "1000"]
        if os.geteuid() == 0:
            cmd += ["-u", "nobody"]
        cmd += [f"127.0.0.1:{self.port}", "1024"]
        self.proc = self.procs.spawn(
            cmd, self.workdir / "smtp-sink.log", cwd=self.workdir, stdout=subprocess.PIPE
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        wait_port(self.port, 10, lambda: self.proc is not None and self.proc.poll() is None)
        return self

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        pending = b""
        pattern = re.compile(rb"mesg=(\d+)")
        while True:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            now = time.monotonic()
            pending += chunk
            found = pattern.findall(pending)
            cut = max(pending.rfind(b"\r"), pending.rfind(b"\n"))
            pending = pending[cut + 1 :] if cut >= 0 else pending[-200:]
            if found:
                n = int(found[-1])
                with self.cond:
                    if n > self.count:
                        self.count = n
                        self.history.append((n, now))
                        self.cond.notify_all()

    def reached_at(self, n: int) -> float | None:
        with self.cond:
            for count, at in self.history:
                if count >= n:
                    return at
        return None

    def wait_for(self, n: int, deadline: float) -> float | None:
        """Monotonic time the sink first had ``n`` messages; None at the deadline."""
        with self.cond:
            while self.count < n:
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc is not None and self.proc.poll() is not None):
                    return None
                self.cond.wait(min(left, 0.5))
        return self.reached_at(n)

    def stop(self) -> None:
        self.procs.stop(self.proc, 5)
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()
        self.proc = None
