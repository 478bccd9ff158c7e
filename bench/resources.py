"""CPU and memory of the processes under test, from /proc: per-component CPU time,
peak RSS (VmHWM) and peak PSS, host CPU busy, and waiting for a quiet host."""

from __future__ import annotations

import os
import resource
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from util import LOAD_TOOLS, log

CLK_TCK = os.sysconf("SC_CLK_TCK")


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
