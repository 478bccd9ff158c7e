"""Prometheus metrics of the SMTP listener; no label ever names a message or a client."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

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
REPLIES = Counter("elemta_ingress_replies", "Final SMTP replies sent, by class", ["code_class"])
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
_REPLIES = {c: REPLIES.labels(f"{c}xx") for c in "2345"}


def count_message(result: str) -> None:
    """Count one message at the end of DATA by its result."""
    child = _MESSAGES.get(result)
    (child if child is not None else MESSAGES.labels(result)).inc()


def count_reply(code: str) -> None:
    """Count one reply by its class; ``code`` is the three-digit reply code."""
    if len(code) == 3:
        child = _REPLIES.get(code[0])
        if child is not None:
            child.inc()
