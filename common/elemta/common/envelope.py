"""The envelope and the hand-off records that travel between services.

Three records cross JetStream, each as JSON:

* :class:`Envelope` — rides in the ``Elemta-Envelope`` header of the stored message
  (subject ``elemta.msg.<id>``); the payload is the message itself, unless it was
  too large and lives in the Object Store (``body_object``).
* :class:`DeliveryJob` — the queue's order to deliver one message to one
  destination (``elemta.delivery.<id>``); it names the stored message by stream
  sequence, so the body is never copied.
* :class:`Outcome` — the delivery worker's report of one attempt, per recipient
  (``elemta.outcome.<id>``).
* :class:`FirstAttempt` — delivery's report of a stored message's first attempt,
  made straight from ``ELEMTA_MESSAGES`` (also ``elemta.outcome.<id>``): the
  envelope, where the message is stored, and one :class:`Outcome` per destination
  (none when the message is handed to the queue untried, e.g. held).

Each is read with :func:`elemta.common.records.build`: fields that a newer version
added are ignored, so that old and new processes run side by side during a
rolling upgrade. Fields are therefore only ever added, never renamed nor given a
new meaning.

Queue ids sort by time, like Postfix's long queue ids: 10 characters of
milliseconds then 10 random characters, Crockford base32.
"""

from __future__ import annotations

import base64
import json
import os
import random
import time
from dataclasses import dataclass, field
from typing import Any

from .records import build
from .replies import Status

__all__ = [
    "DeliveryJob",
    "Envelope",
    "FirstAttempt",
    "Outcome",
    "RecipientResult",
    "new_queue_id",
]

_B32 = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def _b32(n: int, width: int) -> str:
    out = []
    for _ in range(width):
        out.append(_B32[n & 31])
        n >>= 5
    return "".join(reversed(out))


# The random half of queue ids: seeded from the OS once (and again in a forked
# child), not a system call per id as secrets.randbits makes.
_random = random.Random()
os.register_at_fork(after_in_child=_random.seed)


# RFC 4648 base32 letters to Crockford's, for a whole id at once.
_TO_CROCKFORD = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", _B32.encode())
_MASK50 = (1 << 50) - 1


def new_queue_id(now: float | None = None) -> str:
    """``_b32(ms, 10) + _b32(random 50 bits, 10)``, encoded in one go."""
    ms = int((time.time() if now is None else now) * 1000)
    bits = ((ms & _MASK50) << 70) | (_random.getrandbits(50) << 20)  # 100 bits of 120
    return base64.b32encode(bits.to_bytes(15, "big"))[:20].translate(_TO_CROCKFORD).decode()


def _plain(value: Any) -> Any:
    """A record as JSON types: dataclasses become dicts. Unlike ``dataclasses.asdict``
    nothing is deep-copied, which matters on the per-message path (the envelope of
    every stored message, every first-attempt report)."""
    if hasattr(value, "__dataclass_fields__"):
        return {k: _plain(v) for k, v in vars(value).items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _dump(obj: Any) -> bytes:
    return json.dumps(_plain(obj), separators=(",", ":")).encode()


@dataclass
class Envelope:
    id: str
    sender: str  # "" is the null sender of a bounce
    recipients: list[str]
    received_at: float
    client_ip: str = ""
    client_helo: str = ""
    size: int = 0
    body_object: str = ""  # Object Store name when the body is not inline
    is_bounce: bool = False
    hold: bool = False
    smtputf8: bool = False
    body_8bit: bool = False
    # DSN (RFC 3461), as the client asked at MAIL and RCPT; ENVID and ORCPT in xtext.
    dsn_ret: str = ""  # "FULL", "HDRS" or "" (not asked)
    dsn_envid: str = ""
    dsn_notify: dict[str, str] = field(default_factory=dict)  # recipient -> "NEVER" | "SUCCESS,…"
    dsn_orcpt: dict[str, str] = field(default_factory=dict)  # recipient -> "rfc822;<xtext>"
    # Epoch seconds after which ingress no longer waits for the store's PubAck (and
    # answers 451): a copy stored later is never delivered. 0: no deadline.
    deadline: float = 0.0
    # -9..9 (RFC 6710 MT-PRIORITY or the [priorities] rules; see elemta.common.priority).
    priority: int = 0
    # The stored message has CRLF line ends only and no line beginning with ".":
    # DATA sends it as it is, without the passes that normalize and dot-stuff it
    # (ingress knows this from its own checks; anything else leaves it False).
    wire_ready: bool = False

    def to_header(self) -> str:
        # Every field is of a JSON type already (no nested records): no _plain pass.
        return json.dumps(vars(self), separators=(",", ":"))

    @classmethod
    def from_header(cls, text: str) -> Envelope:
        return build(cls, json.loads(text))


@dataclass
class DeliveryJob:
    id: str  # queue id
    dest: str  # destination key (Route.key())
    route: dict[str, Any]  # Route fields
    domain: str  # recipient domain, for MX delivery
    sender: str
    recipients: list[str]
    msg_seq: int  # sequence of the stored message in ELEMTA_MESSAGES
    body_object: str = ""
    attempt: int = 1
    smtputf8: bool = False
    body_8bit: bool = False
    # DSN parameters to pass on to a next hop that offers DSN (see Envelope).
    dsn_ret: str = ""
    dsn_envid: str = ""
    dsn_notify: dict[str, str] = field(default_factory=dict)
    dsn_orcpt: dict[str, str] = field(default_factory=dict)
    priority: int = 0  # the message's (see Envelope); passed on as MT-PRIORITY
    wire_ready: bool = False  # see Envelope

    def encode(self) -> bytes:
        return _dump(self)

    @classmethod
    def decode(cls, data: bytes) -> DeliveryJob:
        return build(cls, json.loads(data))


@dataclass
class RecipientResult:
    recipient: str
    status: Status  # delivered, deferred or failed
    code: int = 0
    enhanced: str = ""
    text: str = ""
    # The next hop took the DSN parameters (it offers DSN): notices are its to send.
    dsn_passed: bool = False


@dataclass
class Outcome:
    id: str
    dest: str
    domain: str
    attempt: int
    host: str  # the peer that answered (MX host, relay, LMTP or "maildir")
    results: list[RecipientResult] = field(default_factory=list)
    worker: str = ""
    finished_at: float = 0.0
    # Set when delivery made no attempt because the destination is suspended:
    # the queue retries no earlier than this (epoch seconds).
    not_before: float = 0.0

    def encode(self) -> bytes:
        return _dump(self)

    @classmethod
    def decode(cls, data: bytes) -> Outcome:
        return cls.from_dict(json.loads(data))

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Outcome:
        raw = dict(raw)
        raw["results"] = [
            build(RecipientResult, {**r, "status": Status(r["status"])})
            for r in raw.get("results", [])
        ]
        return build(cls, raw)


@dataclass
class FirstAttempt:
    envelope: Envelope
    msg_seq: int  # sequence of the stored message in ELEMTA_MESSAGES
    outcomes: list[Outcome] = field(default_factory=list)
    routes: dict[str, dict[str, Any]] = field(default_factory=dict)  # dest key -> Route fields
    dropped: str = ""  # why the stored copy was not delivered (e.g. stored after its deadline)

    def encode(self) -> bytes:
        return _dump(self)

    @staticmethod
    def is_first(data: bytes) -> bool:
        """Whether a record on ``elemta.outcome.<id>`` is a first-attempt report."""
        return data.startswith(b'{"envelope":')

    @classmethod
    def decode(cls, data: bytes) -> FirstAttempt:
        raw = json.loads(data)
        return cls(
            envelope=build(Envelope, raw["envelope"]),
            msg_seq=raw["msg_seq"],
            outcomes=[Outcome.from_dict(o) for o in raw.get("outcomes", [])],
            routes=raw.get("routes", {}),
            dropped=raw.get("dropped", ""),
        )
