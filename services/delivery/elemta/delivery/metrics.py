"""Prometheus metrics of the delivery worker; no label names a message or recipient."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

__all__ = [
    "ATTEMPTS",
    "ATTEMPT_SECONDS",
    "CONNECTIONS_OPENED",
    "CONNECTIONS_REUSED",
    "HELD",
    "INFLIGHT",
    "RECIPIENTS",
    "SHAPED",
    "TAKEN_OVER",
    "TLS_SESSIONS",
]

ATTEMPTS = Counter(
    "elemta_delivery_attempts_total",
    "Delivery attempts by result: delivered, deferred, failed, mixed (recipients differ), "
    "missing (stored message gone), error (outcome not recorded, job returned), invalid, "
    "backlogged (shaping: no slot, job handed back), reported (offered again after its report "
    "was stored: acked, not attempted again), unsent (NATS unreachable before the end of "
    "data: nothing sent, offered again)",
    ["result"],
)
RECIPIENTS = Counter(
    "elemta_delivery_recipients_total",
    "Recipient results by status: delivered, deferred, failed",
    ["status"],
)
ATTEMPT_SECONDS = Histogram(
    "elemta_delivery_attempt_seconds",
    "Seconds from taking a job to acking it",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
HELD = Counter(
    "elemta_delivery_held_total",
    "Attempts that waited before sending because the end of an earlier delivery was not"
    " stored yet (a stream without a leader, NATS away): what is sent then is delivered"
    " again should the process die",
)
TAKEN_OVER = Counter(
    "elemta_delivery_ends_taken_over_total",
    "Ends of delivered messages that a delivery process killed had written down but not"
    " stored, stored by the process that started after it: each would have been a"
    " second delivery",
)
INFLIGHT = Gauge("elemta_delivery_inflight", "Jobs being worked on by this process")
CONNECTIONS_OPENED = Counter(
    "elemta_delivery_connections_opened_total", "SMTP and LMTP sessions opened"
)
CONNECTIONS_REUSED = Counter(
    "elemta_delivery_connections_reused_total",
    "Messages sent over a session left open by an earlier message",
)
TLS_SESSIONS = Counter(
    "elemta_delivery_tls_sessions_total",
    "SMTP sessions opened, by the policy that applied (none, may, encrypt, verify, dane, sts)"
    " and what came of it: verified, encrypted (not authenticated), plain, failed",
    ["policy", "outcome"],
)
SHAPED = Counter(
    "elemta_delivery_shaping_total",
    "Traffic shaping events: paced (a message waited for its slot), backlogged (a job"
    " handed back for want of a slot), suspended (a job deferred, destination suspended),"
    " suspensions (a reply suspended a destination)",
    ["event"],
)
