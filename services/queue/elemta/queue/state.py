"""Per-message state: the record in KV ``ELEMTA_STATE`` and the store around it.

The record (key = queue id, JSON) is what the queue knows about a message between
events: who is still waiting, at which attempt, and the trace carrier of the
original message so that retries and bounces days later join the same trace.
The API reads the same record to show the queue; its shape is therefore part of
the contract::

    {"id", "sender", "recipients", "received_at", "msg_seq", "body_object",
     "status": "active" | "hold" | "done", "is_bounce", "size",
     "dests": {<route key>: {"route", "domain", "recipients" (still pending),
               "attempt", "status": "queued" | "deferred" | "done",
               "next_attempt", "last": {"code", "enhanced", "text", "host", "at"}}},
     "final": {<recipient>: "delivered" | "bounced" | "expired" | "failed"},
     "trace": {"traceparent", "tracestate"}, "bounces": <DSNs sent so far>,
     "dsn_ret", "dsn_envid", "dsn_notify": {<recipient>: <NOTIFY>},
     "dsn_orcpt": {<recipient>: <ORCPT>}, "delay_warned": [<recipient>, ...],
     "priority": -9..9}

Updates use the KV revision (compare-and-set), so a concurrent writer (the API
releasing or deleting a message) makes the queue's write fail and the work is
redone from the fresh record instead of overwriting it. Inside this process a
per-id lock serialises outcomes, the scheduler and control requests for one
message.
"""

from __future__ import annotations

import asyncio
import json
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from elemta.common.envelope import Envelope
from elemta.common.jetstream import STATE_BUCKET
from elemta.common.records import build

__all__ = ["DestState", "MessageState", "StateConflict", "StateStore"]

TRACE_HEADERS = ("traceparent", "tracestate")


class StateConflict(Exception):
    """Someone else changed the record since it was read."""


@dataclass
class DestState:
    route: dict[str, Any]
    domain: str
    recipients: list[str]
    attempt: int = 1
    status: str = "queued"
    next_attempt: float = 0.0
    last: dict[str, Any] = field(default_factory=dict)


@dataclass
class MessageState:
    id: str
    sender: str
    recipients: list[str]
    received_at: float
    msg_seq: int
    body_object: str = ""
    status: str = "active"
    is_bounce: bool = False
    size: int = 0
    smtputf8: bool = False
    body_8bit: bool = False
    dests: dict[str, DestState] = field(default_factory=dict)
    final: dict[str, str] = field(default_factory=dict)
    trace: dict[str, str] = field(default_factory=dict)
    bounces: int = 0
    # DSN (RFC 3461) as the sender asked; see :mod:`.notices`.
    dsn_ret: str = ""
    dsn_envid: str = ""
    dsn_notify: dict[str, str] = field(default_factory=dict)
    dsn_orcpt: dict[str, str] = field(default_factory=dict)
    delay_warned: list[str] = field(default_factory=list)  # recipients told of a delay
    priority: int = 0  # -9..9, see elemta.common.priority

    @classmethod
    def from_envelope(
        cls, env: Envelope, msg_seq: int, headers: dict[str, str] | None
    ) -> MessageState:
        trace = {k: v for k, v in (headers or {}).items() if k.lower() in TRACE_HEADERS}
        return cls(
            id=env.id,
            sender=env.sender,
            recipients=list(env.recipients),
            received_at=env.received_at,
            msg_seq=msg_seq,
            body_object=env.body_object,
            status="hold" if env.hold else "active",
            is_bounce=env.is_bounce or env.sender == "",
            size=env.size,
            smtputf8=env.smtputf8,
            body_8bit=env.body_8bit,
            trace=trace,
            dsn_ret=env.dsn_ret,
            dsn_envid=env.dsn_envid,
            dsn_notify=dict(env.dsn_notify),
            dsn_orcpt=dict(env.dsn_orcpt),
            priority=env.priority,
        )

    def is_final(self) -> bool:
        """True when no destination has recipients left (and the message is not held)."""
        return self.status != "hold" and all(d.status == "done" for d in self.dests.values())

    def encode(self) -> bytes:
        # vars() rather than asdict(): no deep copy on the per-message path.
        record = dict(vars(self))
        record["dests"] = {k: vars(d) for k, d in self.dests.items()}
        return json.dumps(record, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, data: bytes) -> MessageState:
        raw = json.loads(data)
        raw["dests"] = {k: build(DestState, v) for k, v in raw.get("dests", {}).items()}
        return build(cls, raw)


class _KeyedLocks:
    """asyncio locks by key, forgotten when nobody holds or waits for them."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, list[int]]] = {}

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.setdefault(key, (asyncio.Lock(), [0]))
        users[0] += 1
        try:
            async with lock:
                yield
        finally:
            users[0] -= 1
            if users[0] == 0:
                self._locks.pop(key, None)


class StateStore:
    """Records in KV, with a write-through cache of the ones this process wrote.

    The queue is the only writer (one queue process), so a record it created or
    saved is still current when the outcome arrives; reading it back from KV
    would cost a round trip and a server read per outcome. The cache holds the
    encoded bytes and the revision, bounded to ``cache_size`` records; a miss or
    a conflicting save falls back to KV.
    """

    def __init__(self, js: JetStreamContext, kv: KeyValue, cache_size: int = 20000) -> None:
        self.js = js
        self.kv = kv
        self._locks = _KeyedLocks()
        self._cache: OrderedDict[str, tuple[bytes, int]] = OrderedDict()
        self._cache_size = cache_size

    def _remember(self, queue_id: str, data: bytes, revision: int) -> None:
        self._cache[queue_id] = (data, revision)
        self._cache.move_to_end(queue_id)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    @classmethod
    async def open(cls, js: JetStreamContext) -> StateStore:
        return cls(js, await js.key_value(STATE_BUCKET))

    def lock(self, queue_id: str) -> Any:
        """``async with store.lock(id):`` — one handler per message at a time in this process."""
        return self._locks.hold(queue_id)

    async def create(self, st: MessageState) -> int | None:
        """Store a new record; None when one exists already (a redelivered intake)."""
        data = st.encode()
        try:
            revision = await self.kv.create(st.id, data)
        except KeyWrongLastSequenceError:
            return None
        self._remember(st.id, data, revision)
        return revision

    async def load(self, queue_id: str) -> tuple[MessageState, int] | None:
        """The record and its revision, or None when there is none (finished or deleted)."""
        cached = self._cache.get(queue_id)
        if cached is not None:
            return MessageState.decode(cached[0]), cached[1]
        try:
            entry = await self.kv.get(queue_id)
        except KeyNotFoundError:
            return None
        if not entry.value:
            return None
        return MessageState.decode(entry.value), int(entry.revision or 0)

    async def save(self, st: MessageState, revision: int) -> int:
        data = st.encode()
        try:
            new_revision = await self.kv.update(st.id, data, last=revision)
        except KeyWrongLastSequenceError:
            self._cache.pop(st.id, None)
            raise StateConflict(st.id) from None
        self._remember(st.id, data, new_revision)
        return new_revision

    async def remove(self, queue_id: str) -> None:
        """Forget a message entirely.

        The stream behind the bucket is purged for this one key instead of writing
        a delete marker, so finished messages leave nothing behind in the bucket.
        """
        self._cache.pop(queue_id, None)
        await self.js.purge_stream(f"KV_{STATE_BUCKET}", subject=f"$KV.{STATE_BUCKET}.{queue_id}")
