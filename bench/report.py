"""Output: the table on stdout and everything as JSON in bench/results/."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from util import LOAD_TOOLS, RESULTS_DIR, human_size

from elemta.launcher.mounts import discard_warning


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
        ("80% p50", 8),
        ("80% p99", 8),
        ("host cpu%", 9),
    ]
    print()
    print(
        "Relay benchmark (latency, end-of-DATA -> 250: p50/p99 from the Python probe alongside"
        " smtp-source at peak; 80% p50/p99 from every message of the paced phase)"
    )
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
            r.get("paced_p50_ms"),
            r.get("paced_p99_ms"),
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
        if r.get("paced_host_busy_percent") is not None:
            server = ""
            if r.get("paced_server_p99_ms") is not None:
                server = (
                    f"; elemta_ingress_accept_seconds p50 {r['paced_server_p50_ms']} ms,"
                    f" p99 {r['paced_server_p99_ms']} ms"
                )
            print(
                f"    paced phase ({r.get('paced_rate')}/s): host busy "
                f"{r['paced_host_busy_percent']}%{server}"
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
    if discard_warning(Path(tempfile.gettempdir())):
        print(
            "(the stores are on a filesystem mounted with online discard, which lengthens"
            " the latency tails: bench/README.md, sixth session)"
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


def write_json(
    args: argparse.Namespace,
    tools: dict[str, str],
    started: datetime.datetime,
    interrupted: bool,
    results: list[dict[str, Any]],
    ratios: list[dict[str, Any]],
) -> Path:
    """Write the run as JSON (``--output``, else bench/results/relay-<UTC>.json)."""
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
    return out
