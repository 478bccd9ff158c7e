#!/usr/bin/env python3
"""What traffic shaping costs: Elemta relaying to smtp-sink with and without limits.

``make bench-shaping`` runs it (``ARGS="--quick"`` for a smoke run). The same
relay as ``bench/relay.py`` (smtp-source -> Elemta -> smtp-sink, one fresh
system per case), four times:

``none``
    no ``[shaping]`` at all (the baseline);
``other``
    shaping on, but the only rule is for another destination: no limit applies
    to the benchmark's, so it must cost nothing;
``loose``
    a rule for the benchmark's destination that never binds (connections =
    ``--dest-concurrency``, 100000 messages a second): the price of the shared
    leases and message slots in JetStream KV;
``tight``
    ``--rate`` messages a second: the limit holds (throughput near the rate).

Printed: messages per second from the first message sent to the last one at the
sink, and the ratio to ``none``. Results as JSON in
``bench/results/shaping-<UTC timestamp>.json``; figures in bench/README.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
for _path in (str(_HERE.parent / "tests"), str(_HERE)):
    if _path in sys.path:
        sys.path.remove(_path)
    sys.path.insert(0, _path)

from elemta_stack import Elemta, elemta_available  # noqa: E402
from load import run_source  # noqa: E402
from postfix import ensure_postfix  # noqa: E402
from procs import Procs, on_terminate  # noqa: E402
from sink import Sink  # noqa: E402
from util import BenchError, log  # noqa: E402

CASES = ("none", "other", "loose", "tight")


class ShapedElemta(Elemta):
    """The benchmark's Elemta with a ``[shaping]`` section."""

    def __init__(self, *args: Any, shaping: dict[str, Any] | None = None) -> None:
        super().__init__(*args)
        self.shaping = shaping

    def _config(self) -> dict[str, dict[str, Any]]:
        cfg = super()._config()
        if self.shaping is not None:
            cfg["shaping"] = self.shaping
        return cfg


def shaping_for(case: str, sink_port: int, args: argparse.Namespace) -> dict[str, Any] | None:
    dest = f"[127.0.0.1]:{sink_port}"
    if case == "none":
        return None
    if case == "other":
        return {"destinations": {"elsewhere.invalid": {"max_connections": 1}}}
    if case == "loose":
        rule = {"max_connections": args.dest_concurrency, "max_message_rate": 100000.0}
        return {"destinations": {dest: rule}}
    rule = {"max_connections": args.dest_concurrency, "max_message_rate": float(args.rate)}
    return {"destinations": {dest: rule}}


def run_case(
    case: str, args: argparse.Namespace, tools: dict[str, str], procs: Procs, top: Path
) -> dict[str, Any]:
    workdir = top / case
    workdir.mkdir(parents=True)
    count = args.messages if case != "tight" else min(args.messages, int(args.rate * 10))
    result: dict[str, Any] = {"case": case, "messages": count, "ok": False}
    sink = Sink(procs, tools, workdir)
    sink.start()
    system = ShapedElemta(
        procs, workdir, sink.port, args, shaping=shaping_for(case, sink.port, args)
    )
    try:
        system.start()
        if args.warmup:
            run_source(
                tools, system.smtp_port, args.size, 5, args.warmup, workdir / "w.log", 120, procs
            )
            if sink.wait_for(args.warmup, time.monotonic() + 120) is None:
                raise BenchError(f"{case}: warm-up not delivered")
        base = sink.count
        log(f"{case}: {count} messages, {args.sessions} sessions")
        t0, t1, sent, _ = run_source(
            tools, system.smtp_port, args.size, args.sessions, count, workdir / "s.log", 600, procs
        )
        done = sink.wait_for(base + count, t0 + 600)
        if done is None:
            raise BenchError(f"{case}: sink has {sink.count - base}/{count}")
        result.update(
            ok=True,
            seconds=round(done - t0, 3),
            accept_seconds=round(t1 - t0, 3),
            delivered_per_second=round(count / (done - t0), 1),
        )
    except BenchError as exc:
        log(f"{case}: {exc}")
        result["error"] = str(exc)
    finally:
        system.stop()
        sink.stop()
    return result


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--messages", type=int, default=2000)
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--sessions", type=int, default=10)
    p.add_argument("--rate", type=float, default=50.0, help="messages a second in 'tight'")
    p.add_argument("--cases", default=",".join(CASES))
    p.add_argument("--quick", action="store_true", help="300 messages a case")
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--ingress", type=int, default=1)
    p.add_argument("--delivery", type=int, default=1)
    p.add_argument("--concurrency", type=int, default=100)
    p.add_argument("--dest-concurrency", type=int, default=50)
    p.add_argument("--log-level", default="WARNING")
    p.add_argument("--keep", action="store_true")
    args = p.parse_args(argv)
    if args.quick:
        args.messages = 300
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    on_terminate()
    if elemta_available():
        log("Elemta services are not installed (make install)")
        return 1
    tools = ensure_postfix()
    procs = Procs()
    top = Path(tempfile.mkdtemp(prefix="elemta-bench-shaping-"))
    results: list[dict[str, Any]] = []
    started = datetime.datetime.now(datetime.UTC)
    try:
        for case in args.cases.split(","):
            results.append(run_case(case.strip(), args, tools, procs, top))
    finally:
        procs.stop_all()
        if args.keep:
            log(f"logs kept in {top}")
        else:
            shutil.rmtree(top, ignore_errors=True)
    baseline = next((r for r in results if r["case"] == "none" and r["ok"]), None)
    print(f"{'case':<8} {'messages':>8} {'seconds':>8} {'msg/s':>8} {'vs none':>8}")
    for r in results:
        if not r["ok"]:
            print(f"{r['case']:<8} failed: {r.get('error', '')}")
            continue
        ratio = (
            f"{r['delivered_per_second'] / baseline['delivered_per_second']:.2f}"
            if baseline
            else "-"
        )
        print(
            f"{r['case']:<8} {r['messages']:>8} {r['seconds']:>8.2f} "
            f"{r['delivered_per_second']:>8.1f} {ratio:>8}"
        )
    out_dir = _HERE / "results"
    out_dir.mkdir(exist_ok=True)
    out = out_dir / f"shaping-{started:%Y%m%dT%H%M%SZ}.json"
    out.write_text(json.dumps({"args": vars(args), "results": results}, indent=2))
    log(f"results written to {out}")
    return 0 if results and all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
