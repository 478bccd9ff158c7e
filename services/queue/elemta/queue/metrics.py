"""Prometheus metrics of the queue service; no per-message labels, by design."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

__all__ = [
    "ACTIVE",
    "BOUNCES",
    "DEFERRED",
    "EVENTS",
    "INTAKE",
    "INTAKE_SECONDS",
    "OLDEST_AGE",
    "OUTCOMES",
    "QUEUED",
    "RECLAIMED",
    "STRAYS",
]

INTAKE = Counter(
    "elemta_queue_intake_total", "First-attempt reports taken in (every stored message passes once)"
)
INTAKE_SECONDS = Histogram(
    "elemta_queue_intake_seconds",
    "Time to take in one message (state, jobs, event)",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
OUTCOMES = Counter("elemta_queue_outcomes_total", "Delivery outcomes handled")
EVENTS = Counter("elemta_queue_events_total", "Message events published", ["type"])
DEFERRED = Gauge("elemta_queue_deferred_messages", "Jobs waiting in the retry scheduler")
BOUNCES = Counter("elemta_queue_bounces_total", "Delivery status notifications sent")
QUEUED = Gauge(
    "elemta_queue_messages", "Messages accepted and not yet finished (in ELEMTA_MESSAGES)"
)
OLDEST_AGE = Gauge(
    "elemta_queue_oldest_message_age_seconds", "Age of the oldest message in the queue"
)
ACTIVE = Gauge(
    "elemta_queue_active", "1 in the queue process holding the lease (the active one), else 0"
)
STRAYS = Counter(
    "elemta_queue_strays_total",
    "Stored messages handed to the queue because their first attempt was counted done "
    "without a report (consumer progress lost or skipped by NATS)",
)

RECLAIMED = Counter(
    "elemta_queue_reclaimed_total",
    "Stored first-attempt copies removed once their first attempt was over",
)
