#!/usr/bin/env python3
"""Relay benchmark: Elemta against Postfix, on loopback, with Postfix's own tools.

``make bench`` runs it (``make bench ARGS="--quick"`` for a smoke run). For each
message size and session count, ``smtp-source`` sends mail for ``bench.test`` to
the system under test, which relays it to an ``smtp-sink``; we measure how fast
the system accepts mail, how fast it has all of it at the sink, the accept latency
(a low-rate Python probe client running alongside), and the memory and CPU of
each component. Every case gets a fresh system (fresh JetStream store or Postfix
queue) and a fresh sink. See bench/README.md for what each number means.

This file is the command line and runs the cases; the pieces are its siblings:
``postfix.py`` and ``elemta_stack.py`` (the systems), ``load.py`` (smtp-source and
the probe), ``sink.py`` (counting at smtp-sink), ``resources.py`` (CPU and memory),
``metrics.py`` (Elemta's /metrics), ``report.py`` (table and JSON), ``procs.py``
and ``util.py``.

Everything runs on 127.0.0.1; all processes and temporary directories are removed
on exit, on error and on Ctrl-C.
"""

from __future__ import annotations

import argparse
import datetime
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# The sibling modules, then the test suite's support package (tests/support: the
# loopback DNS server, nats-server lookup, TOML writer), as tests/conftest.py does.
_HERE = Path(__file__).resolve().parent
for _path in (str(_HERE.parent / "tests"), str(_HERE)):
    if _path in sys.path:
        sys.path.remove(_path)
    sys.path.insert(0, _path)

from elemta_stack import Elemta, elemta_available  # noqa: E402
from load import PacedLoad, Probe, percentile, run_source  # noqa: E402
from metrics import histogram_quantile, since  # noqa: E402
from postfix import Postfix, ensure_postfix  # noqa: E402
from procs import Procs, on_terminate  # noqa: E402
from report import print_report, write_json  # noqa: E402
from resources import Sampler, machine_cpu, wait_for_quiet  # noqa: E402
from sink import Sink  # noqa: E402
from util import BenchError, System, human_size, log  # noqa: E402

# Enough for each case to last several seconds on a fast host: 2,000 and 1,000
# messages took Elemta 1.2-1.5 s, too short to tell 10 % apart from run to run.
DEFAULT_MESSAGES = {1024: 8000, 100 * 1024: 4000}
QUICK_MESSAGES = {1024: 300, 100 * 1024: 150}


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
        if done is not None and args.paced > 0:
            _paced(result, system, size, sessions, args, sink, label, timeout)
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


def _paced(
    result: dict[str, Any],
    system: System,
    size: int,
    sessions: int,
    args: argparse.Namespace,
    sink: Sink,
    label: str,
    timeout: float,
) -> None:
    """The paced phase: ``--paced`` of the end-to-end rate just measured, open loop,
    for ``--paced-seconds``; every message's accept latency (p50/p99 at 80 % of peak)."""
    rate = args.paced * result["end_to_end_rate"]
    count = max(50, int(rate * args.paced_seconds))
    log(f"{label}: paced phase, {count} messages at {rate:.0f}/s")
    before = sink.count
    load = PacedLoad(system.smtp_port, size, rate, count, sessions)
    # The client's latency includes its own Python loop on the same two cores; the
    # host's load and the system's own histogram of the phase tell the parts apart.
    metrics_before = system.metrics() if isinstance(system, Elemta) else []
    busy0, total0 = machine_cpu()
    load.start()
    load.join(timeout)
    busy1, total1 = machine_cpu()
    if isinstance(system, Elemta):
        phase = since(system.metrics(), metrics_before)
        for q in (0.5, 0.99):
            v = histogram_quantile(phase, "elemta_ingress_accept_seconds", q)
            result[f"paced_server_p{int(q * 100)}_ms"] = _ms(v)
    result["paced_host_busy_percent"] = (
        round(100 * (busy1 - busy0) / (total1 - total0), 1) if total1 > total0 else None
    )
    got = sink.wait_for(before + load.accepted, time.monotonic() + timeout)
    lat = load.latencies
    result.update(
        {
            "paced_fraction": args.paced,
            "paced_target_rate": round(rate, 1),
            "paced_rate": round(load.accepted / load.seconds, 1) if load.seconds else None,
            "paced_messages": load.accepted,
            "paced_failures": load.failures,
            "paced_late": load.late,
            "paced_p50_ms": _ms(percentile(lat, 50)),
            "paced_p99_ms": _ms(percentile(lat, 99)),
            "paced_max_ms": _ms(max(lat) if lat else None),
        }
    )
    if load.error or load.failures or got is None:
        result["ok"] = False
        result["error"] = (
            f"paced phase: {load.error or ''} {load.failures} refused, "
            f"sink has {sink.count - before}/{load.accepted}"
        )


def _ms(v: float | None) -> float | None:
    return None if v is None else round(v * 1000, 2)


def parse_size(text: str) -> int:
    m = re.fullmatch(r"(\d+)\s*([kKmM]?)[bB]?", text.strip())
    if not m:
        raise argparse.ArgumentTypeError(f"bad size {text!r}; use e.g. 1k, 100k, 4096")
    return int(m.group(1)) * {"": 1, "k": 1024, "m": 1024 * 1024}[m.group(2).lower()]


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
        help="messages per case (default 8000 at 1 KB, 4000 at 100 KB, else 1000)",
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
        "--nats-memory-limit",
        default="100MiB",
        help="Elemta's nats-server soft memory limit (elemta run --nats-memory-limit; '': none)",
    )
    p.add_argument(
        "--probe", type=int, default=None, help="latency probe messages (default count/10, 20..200)"
    )
    p.add_argument("--probe-interval", type=float, default=0.01, help="pause between probes, s")
    p.add_argument(
        "--paced",
        type=float,
        default=0.8,
        help="paced phase at this fraction of the measured end-to-end rate (0: none)",
    )
    p.add_argument("--paced-seconds", type=float, default=5.0, help="length of the paced phase, s")
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
    p.add_argument(
        "--priorities",
        action="store_true",
        help="Elemta with [priorities] on (all mail in the normal class): their cost",
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
    out = write_json(args, tools, started, interrupted, results, ratios)
    log(f"results written to {out}")
    if interrupted:
        return 130
    return 0 if results and all(r.get("ok") for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
