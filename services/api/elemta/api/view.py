"""The reads of the queue in JetStream that the HTTP handlers answer from.

It turns stream state, KV entries and event messages into plain JSON-ready
values. The connection and readiness are :mod:`.backend`'s.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from typing import Any

import nats.errors
from nats.js import JetStreamContext
from nats.js.api import ConsumerInfo, StreamInfo
from nats.js.errors import BucketNotFoundError, KeyNotFoundError, NotFoundError
from nats.js.kv import KeyValue

from elemta.common.history import batched_events
from elemta.common.jetstream import (
    BODIES_BUCKET,
    DEFERRED_STREAM,
    DELIVERY_STREAM,
    ENVELOPE_HEADER,
    EVENTS_STREAM,
    EVENTS_SUBJECT,
    MESSAGES_STREAM,
    OUTCOMES_STREAM,
    STATE_BUCKET,
)
from elemta.common.names import (
    FAILED_BUCKET,
    PRIORITY_CLASSES,
    SUSPENSIONS_BUCKET,
    delivery_consumer,
    msg_subject,
    stored_subjects,
)
from elemta.common.scan import scan

from .backend import Backend, Unavailable

__all__ = ["MAX_EVENTS", "QUEUE_ID", "QueueView", "Unavailable", "normalize_queue_id"]

log = logging.getLogger(__name__)

QUEUE_ID = re.compile(r"^[0-9A-HJKMNP-TV-Z]{20}$")

# A message's history is short (accepted, a few attempts, the end); this bounds
# the work one request can cause if something publishes in a loop.
MAX_EVENTS = 1000
# Records one listing reads at most; a queue larger than this is listed in part
# (the summary says so).
MAX_SCAN = 100_000

QUEUE_STREAMS = (MESSAGES_STREAM, DELIVERY_STREAM, DEFERRED_STREAM, OUTCOMES_STREAM, EVENTS_STREAM)


def normalize_queue_id(text: str) -> str | None:
    """The canonical (upper case) queue id, or None when ``text`` is not one."""
    qid = text.strip().upper()
    return qid if QUEUE_ID.match(qid) else None


def _decode(data: bytes | None) -> Any:
    """JSON when it is JSON; otherwise the text, so nothing is hidden."""
    text = (data or b"").decode("utf-8", errors="replace")
    try:
        return json.loads(text)
    except ValueError:
        return {"raw": text}


def _stream_json(info: StreamInfo, consumers: list[ConsumerInfo]) -> dict[str, Any]:
    st = info.state
    return {
        "messages": st.messages,
        "bytes": st.bytes,
        "first_seq": st.first_seq,
        "last_seq": st.last_seq,
        "consumers": {
            c.name: {
                "pending": c.num_pending or 0,
                "ack_pending": c.num_ack_pending or 0,
                "redelivered": c.num_redelivered or 0,
                "waiting": c.num_waiting or 0,
            }
            for c in consumers
            # Durable consumers are the services'; ephemeral ones are readers
            # like this service and would only add noise.
            if c.config.durable_name
        },
    }


class QueueView:
    """Reads of the queue; every read of JetStream the API does goes through here, so
    that a change in where the queue keeps things is a change in this module only."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self._kv: KeyValue | None = None

    def _ready_js(self) -> JetStreamContext:
        return self.backend.js()

    # -- queries ----------------------------------------------------------------

    async def queue_summary(self) -> dict[str, Any]:
        js = self._ready_js()

        async def one(name: str) -> tuple[str, dict[str, Any] | None]:
            try:
                info, consumers = await asyncio.gather(
                    js.stream_info(name), js.consumers_info(name)
                )
            except NotFoundError:
                return name, None
            return name, _stream_json(info, consumers)

        try:
            results = dict(await asyncio.gather(*(one(n) for n in QUEUE_STREAMS)))
        except (TimeoutError, nats.errors.Error) as exc:
            raise Unavailable(f"NATS did not answer: {exc!r}") from None
        missing = [n for n, v in results.items() if v is None]
        if missing:
            raise Unavailable("streams not created yet: " + ", ".join(missing))
        streams: dict[str, dict[str, Any]] = {k: v for k, v in results.items() if v}
        delivery = streams[DELIVERY_STREAM]
        in_flight = sum(
            worker["ack_pending"]
            for worker in (
                delivery["consumers"].get(delivery_consumer(c)) for c in PRIORITY_CLASSES
            )
            if worker
        )
        return {
            "messages": streams[MESSAGES_STREAM]["messages"],
            "message_bytes": streams[MESSAGES_STREAM]["bytes"],
            # A work-queue stream holds a job until it is acknowledged, so the
            # jobs waiting for a worker are its messages minus those in flight.
            "delivery_waiting": max(0, delivery["messages"] - in_flight),
            "delivery_in_flight": in_flight,
            "deferred": streams[DEFERRED_STREAM]["messages"],
            "outcomes_pending": streams[OUTCOMES_STREAM]["messages"],
            "streams": streams,
        }

    async def message_state(self, qid: str) -> Any | None:
        """The queue's JSON state for ``qid``; None when there is none (any more).

        A message waiting for its first attempt has no state yet (the queue writes
        one only for mail not delivered at once): it is found in ``ELEMTA_MESSAGES``
        and shown from its envelope, ``active`` with ``first_attempt: "pending"``."""
        js = self._ready_js()
        try:
            if self._kv is None:
                self._kv = await js.key_value(STATE_BUCKET)
            entry = await self._kv.get(qid)
        except (BucketNotFoundError, KeyNotFoundError):
            return await self._waiting(js, qid)
        except (TimeoutError, nats.errors.Error) as exc:
            raise Unavailable(f"NATS did not answer: {exc!r}") from None
        if not entry.value:
            return await self._waiting(js, qid)
        return _decode(entry.value)

    async def _waiting(self, js: JetStreamContext, qid: str) -> dict[str, Any] | None:
        try:
            raw = await js.get_last_msg(MESSAGES_STREAM, msg_subject(qid), direct=True)
        except NotFoundError:
            # a message of another priority class (elemta.<class>.msg.<id>)
            try:
                raw = await js.get_last_msg(MESSAGES_STREAM, msg_subject(qid, "*"), direct=True)
            except NotFoundError:
                return None
            except (TimeoutError, nats.errors.Error) as exc:
                raise Unavailable(f"NATS did not answer: {exc!r}") from None
        except (TimeoutError, nats.errors.Error) as exc:
            raise Unavailable(f"NATS did not answer: {exc!r}") from None
        env = _decode(((raw.headers or {}).get(ENVELOPE_HEADER) or "{}").encode())
        if not isinstance(env, dict):
            return None
        return {
            "id": qid,
            "sender": env.get("sender", ""),
            "recipients": env.get("recipients", []),
            "received_at": env.get("received_at", 0.0),
            "msg_seq": raw.seq,
            "body_object": env.get("body_object", ""),
            "status": "hold" if env.get("hold") else "active",
            "size": env.get("size", 0),
            "priority": env.get("priority", 0),
            "dests": {},
            "final": {},
            "first_attempt": "pending",
        }

    async def message_events(self, qid: str) -> list[Any]:
        """The history of ``qid``, oldest first, by direct get of each next event."""
        js = self._ready_js()
        subject = f"{EVENTS_SUBJECT}.{qid}"
        events: list[Any] = []
        seq = 1
        try:
            while len(events) < MAX_EVENTS:
                try:
                    msg = await js.get_msg(
                        EVENTS_STREAM, seq=seq, subject=subject, direct=True, next=True
                    )
                except NotFoundError:
                    break
                record = _decode(msg.data)
                # one stored record may carry several events of one step
                events.extend(record if isinstance(record, list) else [record])
                seq = (msg.seq or seq) + 1
            if not any(isinstance(e, dict) and e.get("type") == "done" for e in events):
                events.extend((await batched_events(js, qid, direct=True) or [])[:MAX_EVENTS])
        except (TimeoutError, nats.errors.Error) as exc:
            raise Unavailable(f"NATS did not answer: {exc!r}") from None
        return events

    # -- the queue's messages -------------------------------------------------------

    async def states(self) -> list[dict[str, Any]]:
        """Every message record in KV ``ELEMTA_STATE`` (one pass over the bucket's
        stream, latest value per key), at most :data:`MAX_SCAN`."""
        return await self._scan(STATE_BUCKET, "id")

    async def finished(self, qid: str) -> dict[str, Any] | None:
        """The kept record of a message that failed (bounced, expired), if still kept."""
        js = self._ready_js()
        try:
            kv = await js.key_value(FAILED_BUCKET)
            entry = await kv.get(qid)
        except (BucketNotFoundError, KeyNotFoundError):
            return None
        except (TimeoutError, nats.errors.Error) as exc:
            raise Unavailable(f"NATS did not answer: {exc!r}") from None
        record = _decode(entry.value) if entry.value else None
        return record if isinstance(record, dict) else None

    async def failed_states(self) -> list[dict[str, Any]]:
        """Every kept record of a failed message, at most :data:`MAX_SCAN`."""
        return await self._scan(FAILED_BUCKET, "id")

    async def raw_message(self, state: dict[str, Any]) -> bytes | None:
        """The stored message (headers and body) of a queued message; None when gone."""
        js = self._ready_js()
        qid = str(state.get("id", ""))
        try:
            if state.get("body_object"):
                objects = await js.object_store(BODIES_BUCKET)
                return (await objects.get(str(state["body_object"]))).data or b""
            raw = await js.get_msg(MESSAGES_STREAM, seq=int(state.get("msg_seq") or 0), direct=True)
        except NotFoundError:
            return None
        except (TimeoutError, nats.errors.Error) as exc:
            raise Unavailable(f"NATS did not answer: {exc!r}") from None
        if raw.subject not in stored_subjects(qid):
            return None
        return raw.data or b""

    async def suspensions(self) -> list[dict[str, Any]]:
        """The suspensions in KV ``ELEMTA_SUSPENSIONS`` (ended ones included; the
        caller filters by time)."""
        return await self._scan(SUSPENSIONS_BUCKET, "domain")

    async def _scan(self, bucket: str, key_field: str) -> list[dict[str, Any]]:
        """The latest value of every key of KV ``bucket`` that is a JSON object with
        ``key_field``, at most :data:`MAX_SCAN`; an empty list while the bucket does
        not exist yet.

        One pass over the bucket's stream from the last value of each key
        (:func:`elemta.common.scan.scan`: it ends on the server's count; a KV watcher
        signals the end with a marker that can arrive before the values it should
        follow, and a listing then came back empty).
        """
        js = self._ready_js()
        out: list[dict[str, Any]] = []
        try:
            async for msg in scan(
                js,
                f"KV_{bucket}",
                f"$KV.{bucket}.>",
                last_per_subject=True,
                limit=MAX_SCAN,
                wait=self.backend.cfg.nats.publish_timeout,
            ):
                if (msg.headers or {}).get("KV-Operation") in ("DEL", "PURGE"):
                    continue
                record = _decode(msg.data)
                if isinstance(record, dict) and key_field in record:
                    out.append(record)
        except NotFoundError:
            return []
        except (TimeoutError, nats.errors.Error) as exc:
            raise Unavailable(f"NATS did not answer: {exc!r}") from None
        return out
