"""The load: ``smtp-source`` and the Python latency probe that runs alongside it."""

from __future__ import annotations

import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from procs import Procs
from util import RECIPIENT, SENDER, BenchError, tail


def make_message(size: int, tag: str) -> bytes:
    head = (
        f"From: <probe@client.test>\r\nTo: <{RECIPIENT}>\r\nSubject: latency probe {tag}\r\n"
        f"Message-ID: <{tag}@client.test>\r\n\r\n"
    ).encode()
    line = b"x" * 78 + b"\r\n"
    body = line * (size // len(line)) + b"y" * (size % len(line))
    return head + body + b"\r\n.\r\n"


class Probe(threading.Thread):
    """One sequential SMTP session measuring end-of-DATA -> 250 for each message.

    It runs alongside smtp-source at a low rate (one message at a time, ``interval``
    seconds apart, at most ``limit`` messages), so it measures the latency a client
    sees while the system is under the smtp-source load.
    """

    def __init__(self, port: int, size: int, limit: int, interval: float) -> None:
        super().__init__(daemon=True)
        self.port, self.size, self.limit, self.interval = port, size, limit, interval
        self.latencies: list[float] = []
        self.failures = 0
        self.error = ""
        self.stop_event = threading.Event()

    @property
    def accepted(self) -> int:
        return len(self.latencies)

    def run(self) -> None:
        if self.limit <= 0:
            return
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=60) as sock:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                rfile = sock.makefile("rb")
                self._expect(rfile, 220)
                sock.sendall(b"EHLO probe.client.test\r\n")
                self._expect(rfile, 250)
                run = uuid.uuid4().hex[:12]
                i = 0
                while not self.stop_event.is_set() and i < self.limit:
                    i += 1
                    msg = make_message(self.size, f"probe-{run}-{i}")
                    sock.sendall(b"MAIL FROM:<probe@client.test>\r\n")
                    self._expect(rfile, 250)
                    sock.sendall(f"RCPT TO:<{RECIPIENT}>\r\n".encode())
                    self._expect(rfile, 250)
                    sock.sendall(b"DATA\r\n")
                    self._expect(rfile, 354)
                    sock.sendall(msg[:-3])
                    t0 = time.perf_counter()
                    sock.sendall(msg[-3:])  # the final ".\r\n": the clock starts here
                    code = self._reply(rfile)
                    t1 = time.perf_counter()
                    if code == 250:
                        self.latencies.append(t1 - t0)
                    else:
                        self.failures += 1
                    self.stop_event.wait(self.interval)
                sock.sendall(b"QUIT\r\n")
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"

    @staticmethod
    def _reply(rfile: Any) -> int:
        while True:
            line = rfile.readline()
            if not line:
                raise ConnectionError("connection closed")
            if len(line) < 4 or line[3:4] != b"-":
                return int(line[:3])

    def _expect(self, rfile: Any, code: int) -> None:
        got = self._reply(rfile)
        if got != code:
            raise ConnectionError(f"expected {code}, got {got}")


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(min(rank, len(ordered))) - 1]


def run_source(
    tools: dict[str, str],
    port: int,
    size: int,
    sessions: int,
    count: int,
    log_path: Path,
    timeout: float,
    procs: Procs,
    on_start: Callable[[], None] = lambda: None,
) -> tuple[float, float, int, Any]:
    """Run smtp-source; return (start, end, messages it reported, its rusage)."""
    flags = f"-s {sessions} -l {size} -m {count} -c -f {SENDER} -t {RECIPIENT}"
    cmd = [tools["smtp-source"], *flags.split(), f"127.0.0.1:{port}"]
    out_path = log_path.with_suffix(".out")
    with open(out_path, "wb") as out:
        t0 = time.monotonic()
        proc = procs.spawn(cmd, log_path, stdout=out.fileno())
        on_start()
        deadline = t0 + timeout
        status, usage = 0, None
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                proc.kill()
                _, status, usage = os.wait4(proc.pid, 0)
                proc.returncode = -9
                procs.items.remove(proc)
                raise BenchError(f"smtp-source did not finish within {timeout:.0f}s")
            time.sleep(0.002)
        t1 = time.monotonic()
    proc.returncode = os.waitstatus_to_exitcode(status)
    procs.items.remove(proc)
    counts = re.findall(rb"(\d+)", out_path.read_bytes())
    sent = int(counts[-1]) if counts else 0
    if proc.returncode != 0:
        raise BenchError(f"smtp-source exited {proc.returncode}: {tail(log_path, 800).strip()}")
    return t0, t1, sent, usage


class PacedLoad(threading.Thread):
    """Mail at a fixed rate, for the accept latency below peak.

    ``sessions`` SMTP sessions (asyncio, one thread) send ``count`` messages on an
    open-loop schedule: message ``i`` is due ``i / rate`` seconds after the start,
    whether or not earlier ones were answered, so a slow system cannot slow the
    load down (a closed loop would hide its latency). Each session takes the next
    due message when it is free. The latency of every message is measured as the
    probe measures it: from the final ``.`` of DATA to the ``250``. ``late`` counts
    messages that left more than 100 ms after they were due (every session busy).
    """

    def __init__(self, port: int, size: int, rate: float, count: int, sessions: int) -> None:
        super().__init__(daemon=True)
        self.port, self.size, self.rate, self.count = port, size, rate, count
        self.sessions = sessions
        self.latencies: list[float] = []
        self.failures = 0
        self.late = 0
        self.error = ""
        self.seconds = 0.0
        self._next = 0

    @property
    def accepted(self) -> int:
        return len(self.latencies)

    def run(self) -> None:
        import asyncio

        try:
            asyncio.run(self._main())
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"

    async def _main(self) -> None:
        import asyncio

        run = uuid.uuid4().hex[:12]
        start = time.perf_counter() + 0.2
        await asyncio.gather(*(self._session(start, run) for _ in range(self.sessions)))
        self.seconds = time.perf_counter() - start

    async def _session(self, start: float, run: str) -> None:
        import asyncio

        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        try:
            await self._expect(reader, 220)
            writer.write(b"EHLO paced.client.test\r\n")
            await self._expect(reader, 250)
            while self._next < self.count:
                i = self._next
                self._next += 1
                due = start + i / self.rate
                wait = due - time.perf_counter()
                if wait > 0:
                    await asyncio.sleep(wait)
                elif wait < -0.1:
                    self.late += 1
                msg = make_message(self.size, f"paced-{run}-{i}")
                writer.write(b"MAIL FROM:<paced@client.test>\r\n")
                await self._expect(reader, 250)
                writer.write(f"RCPT TO:<{RECIPIENT}>\r\n".encode())
                await self._expect(reader, 250)
                writer.write(b"DATA\r\n")
                await self._expect(reader, 354)
                writer.write(msg[:-3])
                await writer.drain()
                t0 = time.perf_counter()
                writer.write(msg[-3:])
                code = await self._reply(reader)
                if code == 250:
                    self.latencies.append(time.perf_counter() - t0)
                else:
                    self.failures += 1
            writer.write(b"QUIT\r\n")
        finally:
            writer.close()

    @staticmethod
    async def _reply(reader: Any) -> int:
        while True:
            line = await reader.readline()
            if not line:
                raise ConnectionError("connection closed")
            if len(line) < 4 or line[3:4] != b"-":
                return int(line[:3])

    async def _expect(self, reader: Any, code: int) -> None:
        got = await self._reply(reader)
        if got != code:
            raise ConnectionError(f"expected {code}, got {got}")
