"""Per-message history on ``elemta.events.<id>``, captured by ELEMTA_EVENTS.

Events go out with a core NATS publish, without waiting for the stream's
acknowledgement: the history is for people and the API, the state in KV is what
the queue relies on, and an ack wait per event would cost throughput.

Every stored event is a write (and, with ``sync_interval: always``, an fsync) in
nats-server, so the events of one step — say ``attempt``, ``delivered`` and
``done`` for one outcome — are gathered with :meth:`EventPublisher.batch` and go
out as one JSON array. A lone event is a JSON object; readers accept both.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from nats.aio.client import Client as NATS

from elemta.common.jetstream import EVENTS_SUBJECT

from .metrics import EVENTS

__all__ = ["EventPublisher"]

log = logging.getLogger(__name__)


_pending: contextvars.ContextVar[dict[str, list[dict[str, Any]]] | None] = contextvars.ContextVar(
    "pending_events", default=None
)


class EventPublisher:
    def __init__(self, nc: NATS) -> None:
        self.nc = nc

    @contextlib.asynccontextmanager
    async def batch(self) -> AsyncIterator[None]:
        """Gather the events emitted inside the block; publish one record per message."""
        if _pending.get() is not None:  # already gathering: the outer block publishes
            yield
            return
        token = _pending.set({})
        try:
            yield
        finally:
            gathered = _pending.get() or {}
            _pending.reset(token)
            for queue_id, records in gathered.items():
                await self._publish(queue_id, records)

    async def emit(self, queue_id: str, type_: str, **details: Any) -> None:
        record = {"type": type_, "at": round(time.time(), 6), "id": queue_id, **details}
        gathering = _pending.get()
        if gathering is not None:
            gathering.setdefault(queue_id, []).append(record)
            return
        await self._publish(queue_id, [record])

    async def _publish(self, queue_id: str, records: list[dict[str, Any]]) -> None:
        payload: Any = records[0] if len(records) == 1 else records
        try:
            await self.nc.publish(
                f"{EVENTS_SUBJECT}.{queue_id}", json.dumps(payload, separators=(",", ":")).encode()
            )
        except Exception as exc:  # an event lost is not worth failing the message for
            log.warning("cannot publish %d event(s): %s", len(records), exc)
            return
        for record in records:
            EVENTS.labels(type=record["type"]).inc()
