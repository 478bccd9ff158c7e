"""Every name Elemta gives a thing in NATS: streams, subjects, consumers, key-value
buckets, object stores, headers, request subjects and queue groups. Nothing else
in the tree spells one out; ``docs/architecture.md`` lists them all.

Streams (subjects in parentheses) — created by the queue service:

``ELEMTA_MESSAGES`` (``elemta.msg.<id>``; ``elemta.high.msg.<id>``, ``elemta.low.msg.<id>``)
    Accepted messages: envelope in the ``Elemta-Envelope`` header, body in the
    payload. Consumer ``delivery-first``, shared by every delivery process (first
    attempts); ``queue-intake`` is the queue's consumer of earlier versions, removed
    at start. With priorities on, messages of the high and low classes have
    subjects of their own, pulled through ``delivery-first-high`` and
    ``delivery-first-low``; normal ones keep ``elemta.msg.<id>``. A message the
    queue takes over (anything left to do after its first attempt) is copied to
    ``elemta.kept.<id>``, which no first-attempt consumer reads, so that every
    ``elemta.msg`` copy can be removed in bulk once its first attempt is over.
``ELEMTA_DELIVERY`` (``elemta.delivery.<id>``; ``elemta.high.delivery.<id>``, ``elemta.low.delivery.<id>``)
    Work queue of delivery jobs. Consumer ``delivery``, shared by every delivery
    process; ``delivery-high`` and ``delivery-low`` for the other classes.
``ELEMTA_OUTCOMES`` (``elemta.outcome.<id>``)
    Work queue of attempt outcomes and first-attempt reports. Consumer
    ``queue-outcomes``.
``ELEMTA_DEFERRED`` (``elemta.deferred.<id>``)
    Jobs waiting for their retry time, each with an ``Elemta-Due`` header; the
    queue reads them back at start through a short-lived consumer
    ``queue-rebuild-<random>``.
``ELEMTA_EVENTS`` (``elemta.events.<id>``)
    Per-message history.
``ELEMTA_AUDIT`` (``elemta.audit.<action>``)
    Every change made through the API or the ``elemta`` command: who, what,
    when, from where. Created by the api service (and ``elemta key create
    --bootstrap``).

Key-value buckets and object stores:

``ELEMTA_STATE`` (KV, queue service)
    Per-message state.
``ELEMTA_GREYLIST`` (KV, policy service)
    Greylisting triplets.
``ELEMTA_RATELIMIT`` (KV, policy service)
    Rate-limit counters.
``ELEMTA_AUTH_FAILURES`` (KV, policy service)
    Failed logins per client address and per login, for slowing down and lockout.
``ELEMTA_CLIENT_LIMITS`` (KV, ingress)
    Per-client connection counts and connection, message and recipient rates.
``ELEMTA_MTA_STS`` (KV, delivery)
    MTA-STS policies, cached for their ``max_age``.
``ELEMTA_TLSRPT`` (KV, delivery)
    TLS-RPT result counts per day, domain and process.
``ELEMTA_QUEUE_LEASE`` (KV, queue service)
    Key ``active``: which queue process is the active one (the others stand
    by); its TTL makes a dead holder's lease expire.
``ELEMTA_BODIES`` (Object Store)
    Bodies larger than ``nats.inline_body_limit``.
``ELEMTA_FAILED`` (KV, queue service writes, api reads)
    The last state of each message that failed (a recipient bounced or
    expired), kept ``queue.failed_retention`` seconds after it was finished.
``ELEMTA_SHAPING`` (KV, delivery)
    Traffic shaping shared by every delivery process: connection leases
    ``c.<dest>.<slot>`` and message schedules ``r.<dest>``.
``ELEMTA_SUSPENSIONS`` (KV, queue service writes, queue and delivery read)
    Suspended destinations by domain: reason and end; no delivery attempt to a
    suspended domain (see :mod:`elemta.common.suspensions`).
``ELEMTA_API_KEYS`` (KV, api service)
    API keys by key id: label, role, expiry and the SHA-256 of the secret (never
    the secret).
``ELEMTA_API_SESSIONS`` (KV, api service)
    Console sessions by the SHA-256 of the session cookie: who logged in, role,
    CSRF token; entries expire after ``api.session_lifetime``.

Core NATS requests (no stream): ``elemta.queue.<verb>`` for each verb of
``CONTROL_VERBS``, answered by the queue group ``elemta-queue``.
"""

from __future__ import annotations

__all__ = [
    "AUDIT_STREAM",
    "AUDIT_SUBJECT",
    "AUTH_FAILURES_BUCKET",
    "CLIENT_LIMITS_BUCKET",
    "BODIES_BUCKET",
    "CONTROL_QUEUE_GROUP",
    "CONTROL_SUBJECT",
    "CONTROL_VERBS",
    "DEFERRED_STREAM",
    "DEFERRED_SUBJECT",
    "DELIVERY_CONSUMER",
    "DELIVERY_STREAM",
    "DELIVERY_SUBJECT",
    "DUE_HEADER",
    "PRIORITY_CLASSES",
    "ENVELOPE_HEADER",
    "FAILED_BUCKET",
    "EVENTS_STREAM",
    "EVENTS_SUBJECT",
    "FIRST_CONSUMER",
    "GREYLIST_BUCKET",
    "INTAKE_CONSUMER",
    "LEASE_BUCKET",
    "LEASE_KEY",
    "KEYS_BUCKET",
    "MESSAGES_STREAM",
    "MSG_SUBJECT",
    "KEPT_SUBJECT",
    "LEADER_ELECTED",
    "OUTCOMES_CONSUMER",
    "OUTCOMES_STREAM",
    "OUTCOME_SUBJECT",
    "RATELIMIT_BUCKET",
    "REBUILD_CONSUMER_PREFIX",
    "SESSIONS_BUCKET",
    "STATE_BUCKET",
    "STS_BUCKET",
    "SHAPING_BUCKET",
    "CLAIMS_BUCKET",
    "SUSPENSIONS_BUCKET",
    "TLSRPT_BUCKET",
]

# Streams and the subject prefix each one holds (``<prefix>.<queue id>``).
MESSAGES_STREAM = "ELEMTA_MESSAGES"
DELIVERY_STREAM = "ELEMTA_DELIVERY"
OUTCOMES_STREAM = "ELEMTA_OUTCOMES"
DEFERRED_STREAM = "ELEMTA_DEFERRED"
EVENTS_STREAM = "ELEMTA_EVENTS"
AUDIT_STREAM = "ELEMTA_AUDIT"

MSG_SUBJECT = "elemta.msg"
# JetStream's advisory that a consumer got a new leader (a cluster): ``.<stream>.<consumer>``
LEADER_ELECTED = "$JS.EVENT.ADVISORY.CONSUMER.LEADER_ELECTED"
KEPT_SUBJECT = "elemta.kept"
DELIVERY_SUBJECT = "elemta.delivery"
OUTCOME_SUBJECT = "elemta.outcome"
DEFERRED_SUBJECT = "elemta.deferred"
EVENTS_SUBJECT = "elemta.events"
AUDIT_SUBJECT = "elemta.audit"

# Durable consumers, and the prefix of the queue's short-lived rebuild consumer.
FIRST_CONSUMER = "delivery-first"
INTAKE_CONSUMER = "queue-intake"  # earlier versions' consumer of ELEMTA_MESSAGES, removed
OUTCOMES_CONSUMER = "queue-outcomes"
DELIVERY_CONSUMER = "delivery"
REBUILD_CONSUMER_PREFIX = "queue-rebuild-"

# Priority classes, highest first. ``normal`` is the subject and consumer of old;
# the others put their name before the subject (``elemta.high.msg.<id>``), so
# that ``elemta.msg.>`` still means normal mail only.
PRIORITY_CLASSES = ("high", "normal", "low")

# The names of each class's subjects and consumers (not in __all__, which lists
# names only; docs/architecture.md spells out every one).


def class_prefix(klass: str) -> str:
    """``elemta.`` or ``elemta.<class>.``: what comes before ``msg`` or ``delivery``."""
    return "elemta." if klass == "normal" else f"elemta.{klass}."


def msg_subject(queue_id: str, klass: str = "normal") -> str:
    return f"{class_prefix(klass)}msg.{queue_id}"


def kept_subject(queue_id: str) -> str:
    """Where the queue keeps the copy of a message it took over, whatever its class."""
    return f"{KEPT_SUBJECT}.{queue_id}"


def stored_subjects(queue_id: str) -> set[str]:
    """Every subject of ``ELEMTA_MESSAGES`` a copy of message ``queue_id`` can have."""
    return {msg_subject(queue_id, c) for c in PRIORITY_CLASSES} | {kept_subject(queue_id)}


def delivery_subject(queue_id: str, klass: str = "normal") -> str:
    return f"{class_prefix(klass)}delivery.{queue_id}"


def first_consumer(klass: str) -> str:
    return FIRST_CONSUMER if klass == "normal" else f"{FIRST_CONSUMER}-{klass}"


def delivery_consumer(klass: str) -> str:
    return DELIVERY_CONSUMER if klass == "normal" else f"{DELIVERY_CONSUMER}-{klass}"


# Key-value buckets and the object store.
STATE_BUCKET = "ELEMTA_STATE"
GREYLIST_BUCKET = "ELEMTA_GREYLIST"
RATELIMIT_BUCKET = "ELEMTA_RATELIMIT"
AUTH_FAILURES_BUCKET = "ELEMTA_AUTH_FAILURES"
CLIENT_LIMITS_BUCKET = "ELEMTA_CLIENT_LIMITS"
STS_BUCKET = "ELEMTA_MTA_STS"
TLSRPT_BUCKET = "ELEMTA_TLSRPT"
BODIES_BUCKET = "ELEMTA_BODIES"
LEASE_BUCKET = "ELEMTA_QUEUE_LEASE"
LEASE_KEY = "active"  # the one key of LEASE_BUCKET
KEYS_BUCKET = "ELEMTA_API_KEYS"
SESSIONS_BUCKET = "ELEMTA_API_SESSIONS"
SUSPENSIONS_BUCKET = "ELEMTA_SUSPENSIONS"
SHAPING_BUCKET = "ELEMTA_SHAPING"
CLAIMS_BUCKET = "ELEMTA_CLAIMS"
FAILED_BUCKET = "ELEMTA_FAILED"

# Message headers.
ENVELOPE_HEADER = "Elemta-Envelope"
DUE_HEADER = "Elemta-Due"

# Operator requests to the queue service: ``elemta.queue.<verb>``.
CONTROL_SUBJECT = "elemta.queue"
CONTROL_VERBS = (
    "hold",
    "release",
    "retry",
    "flush",
    "bounce",
    "delete",
    "suspend",
    "unsuspend",
)
CONTROL_QUEUE_GROUP = "elemta-queue"
