"""The read-only view of the queue in JetStream that the HTTP handlers answer from.

It owns the NATS connection, knows when the streams exist (readiness) and turns
stream state, KV entries and event messages into plain JSON-ready values.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Callable
from typing import Any

import nats.errors
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import ConsumerInfo, StreamInfo
from nats.js.errors import BucketNotFoundError, KeyNotFoundError, NotFoundError
from nats.js.kv import KeyValue

from elemta.common.config import Config
from elemta.common.jetstream import (
    DEFERRED_STREAM,
    DELIVERY_CONSUMER,
    DELIVERY_STREAM,
    EVENTS_STREAM,
    EVENTS_SUBJECT,
    MESSAGES_STREAM,
    OUTCOMES_STREAM,
    STATE_BUCKET,
    connect,
    disconnect,
    wait_for_streams,
)

__all__ = ["MAX_EVENTS", "QUEUE_ID", "QueueView", "Unavailable", "normalize_queue_id"]

log = logging.getLogger(__name__)

QUEUE_ID = re.compile(r"^[0-9A-HJKMNP-TV-Z]{20}$")

# A message's history is short (accepted, a few attempts, the end); this bounds
# the work one request can cause if something publishes in a loop.
MAX_EVENTS = 1000

QUEUE_STREAMS = (MESSAGES_STREAM, DELIVERY_STREAM, DEFERRED_STREAM, OUTCOMES_STREAM, EVENTS_STREAM)


class Unavailable(Exception):
    """NATS cannot answer now (not connected, timed out, stream missing)."""


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


async def _cancel(task: asyncio.Task[None], patience: float = 5.0) -> None:
    """Cancel ``task`` and wait for it, cancelling again while it swallows the request.

    nats-py retries the first connection inside ``connect()``, and on Python 3.11
    ``asyncio.wait_for`` loses a cancellation that arrives as a connection
    attempt fails; one ``cancel()`` may never land.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + patience
    while not task.done() and loop.time() < deadline:
        task.cancel()
        await asyncio.wait({task}, timeout=0.1)
    if not task.done():
        log.warning("could not stop the NATS connection task")
        return
    if not task.cancelled() and task.exception() is not None:
        log.warning("NATS connection task failed: %r", task.exception())


class QueueView:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.nc: NATS | None = None
        self.js: JetStreamContext | None = None
        self.streams_ready = False
        self._stop = asyncio.Event()
        self._waiter: asyncio.Task[None] | None = None
        self._kv: KeyValue | None = None

    # -- life cycle -------------------------------------------------------------

    async def start(self) -> None:
        """Start connecting and waiting for the streams, in the background.

        The HTTP side serves at once: ``/healthz`` answers while NATS is still
        unreachable, and ``/readyz`` says what is missing.
        """
        self._waiter = asyncio.create_task(self._connect_and_wait())

    async def _connect_and_wait(self) -> None:
        self.nc = await connect(self.cfg, "elemta-api", stop=self._stop)
        self.js = self.nc.jetstream(timeout=self.cfg.nats.publish_timeout)
        await wait_for_streams(self.js, [EVENTS_STREAM], self._stop)
        if not self._stop.is_set():
            self.streams_ready = True
            log.info("stream %s present; api ready", EVENTS_STREAM)

    async def close(self) -> None:
        self._stop.set()
        if self._waiter is not None:
            await _cancel(self._waiter)
        if self.nc is not None:
            await disconnect(self.nc)

    # -- readiness --------------------------------------------------------------

    def checks(self) -> dict[str, Callable[[], bool]]:
        """The readiness checks, by name (served on ``/readyz``)."""
        return {
            "nats": lambda: self.nc is not None and self.nc.is_connected,
            "streams": lambda: self.streams_ready,
        }

    def failing(self) -> list[str]:
        """Names of the readiness checks that fail; empty when ready."""
        return [name for name, check in self.checks().items() if not check()]

    def _ready_js(self) -> JetStreamContext:
        bad = self.failing()
        if bad or self.js is None:
            raise Unavailable("not ready: " + ", ".join(bad))
        return self.js

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
        worker = delivery["consumers"].get(DELIVERY_CONSUMER)
        in_flight = worker["ack_pending"] if worker else 0
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
        """The queue's JSON state for ``qid``; None when there is none (any more)."""
        js = self._ready_js()
        try:
            if self._kv is None:
                self._kv = await js.key_value(STATE_BUCKET)
            entry = await self._kv.get(qid)
        except (BucketNotFoundError, KeyNotFoundError):
            return None
        except (TimeoutError, nats.errors.Error) as exc:
            raise Unavailable(f"NATS did not answer: {exc!r}") from None
        if not entry.value:
            return None
        return _decode(entry.value)

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
        except (TimeoutError, nats.errors.Error) as exc:
            raise Unavailable(f"NATS did not answer: {exc!r}") from None
        return events
