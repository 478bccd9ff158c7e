"""Reading the Elemta services' Prometheus ``/metrics`` (and ``/readyz``) over HTTP."""

from __future__ import annotations

import re
import urllib.error
import urllib.request

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


def since(
    after: list[tuple[str, dict[str, str], float]], before: list[tuple[str, dict[str, str], float]]
) -> list[tuple[str, dict[str, str], float]]:
    """The counters of ``after`` less those of ``before``: what a phase added."""
    earlier = {(n, tuple(sorted(lab.items()))): v for n, lab, v in before}
    return [(n, lab, v - earlier.get((n, tuple(sorted(lab.items()))), 0.0)) for n, lab, v in after]


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
