"""Per-message history on ``elemta.events.<id>``, captured by ELEMTA_EVENTS.

Events go out with a core NATS publish, without waiting for the stream's
acknowledgement: the history is for people and the API, the state in KV is what
the queue relies on, and an ack wait per event would cost throughput.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from nats.aio.client import Client as NATS

from elemta.common.jetstream import EVENTS_SUBJECT

from .metrics import EVENTS

__all__ = ["EventPublisher"]

log = logging.getLogger(__name__)


class EventPublisher:
    def __init__(self, nc: NATS) -> None:
        self.nc = nc

    async def emit(self, queue_id: str, type_: str, **details: Any) -> None:
        record = {"type": type_, "at": round(time.time(), 6), "id": queue_id, **details}
        try:
            await self.nc.publish(
                f"{EVENTS_SUBJECT}.{queue_id}", json.dumps(record, separators=(",", ":")).encode()
            )
        except Exception as exc:  # an event lost is not worth failing the message for
            log.warning("cannot publish %s event: %s", type_, exc)
            return
        EVENTS.labels(type=type_).inc()
