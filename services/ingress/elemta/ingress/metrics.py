"""Prometheus metrics of the SMTP listener; no label ever names a message or a client."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily

__all__ = [
    "ACCEPT_SECONDS",
    "CONNECTIONS",
    "MESSAGES",
    "MESSAGE_BYTES",
    "REPLIES",
    "SESSIONS",
    "count_message",
    "count_reply",
]

CONNECTIONS = Counter("elemta_ingress_connections", "SMTP connections accepted")
SESSIONS = Gauge("elemta_ingress_sessions", "SMTP sessions open now")
MESSAGES = Counter(
    "elemta_ingress_messages",
    "Messages at the end of DATA, by result",
    ["result"],
)


class _ReplyCounts:
    """``elemta_ingress_replies_total{code_class}``: a counter every reply adds to, so
    kept in plain integers (no lock and label look-up per reply) and read at scrape."""

    def __init__(self) -> None:
        self.counts = dict.fromkeys("2345", 0)

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "elemta_ingress_replies", "Final SMTP replies sent, by class", labels=["code_class"]
        )
        for first, count in self.counts.items():
            family.add_metric([f"{first}xx"], count)
        yield family


REPLIES = _ReplyCounts()
REGISTRY.register(REPLIES)
ACCEPT_SECONDS = Histogram(
    "elemta_ingress_accept_seconds",
    "End of DATA to the 250 reply: policy check and durable store",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
MESSAGE_BYTES = Histogram(
    "elemta_ingress_message_bytes",
    "Size of accepted messages",
    buckets=(1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864),
)

# The labelled children, looked up once: every reply and message counts one.
_MESSAGES = {r: MESSAGES.labels(r) for r in ("accepted", "rejected", "tempfail", "discarded")}


def count_message(result: str) -> None:
    """Count one message at the end of DATA by its result."""
    child = _MESSAGES.get(result)
    (child if child is not None else MESSAGES.labels(result)).inc()


def count_reply(code: str) -> None:
    """Count one reply by its class; ``code`` is the three-digit reply code."""
    counts = REPLIES.counts
    if len(code) == 3 and code[0] in counts:
        counts[code[0]] += 1
