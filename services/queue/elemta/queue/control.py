"""Operator requests: release a held message, delete a message, flush retries.

Core NATS request/reply (not JetStream: a request with no queue to answer should
fail at once, not wait in a stream), in the queue group ``elemta-queue``:

``elemta.queue.release``  ``{"id": "<queue id>"}``
    Route a held message and hand it to delivery (``released`` event).
``elemta.queue.delete``   ``{"id": "<queue id>"}``
    Drop a message without notice: stored message, body and state
    (``deleted`` event). Jobs in flight find no state and are ignored.
``elemta.queue.flush``    ``{"id": "<queue id>"}`` or ``{}`` for all
    Make deferred jobs due now (``postqueue -f`` / ``postqueue -i``).

Every reply is ``{"ok": true, ...}`` or ``{"ok": false, "error": "..."}``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from elemta.common.logs import queue_id
from elemta.common.names import CONTROL_QUEUE_GROUP, CONTROL_SUBJECT, CONTROL_VERBS
from elemta.common.routing import Router
from elemta.common.telemetry import context_from_headers, headers_with_context, tracer

from .dispatch import Dispatcher
from .events import EventPublisher
from .intake import plan_state
from .scheduler import Scheduler
from .state import StateStore

__all__ = ["CONTROL_SUBJECT", "Control"]

log = logging.getLogger(__name__)


class Control:
    def __init__(
        self,
        nc: NATS,
        router: Router,
        store: StateStore,
        dispatcher: Dispatcher,
        scheduler: Scheduler,
        events: EventPublisher,
    ) -> None:
        self.nc = nc
        self.router = router
        self.store = store
        self.dispatcher = dispatcher
        self.scheduler = scheduler
        self.events = events
        self.tracer = tracer(__name__)
        self._subs: list[Subscription] = []

    async def start(self) -> None:
        for verb in CONTROL_VERBS:
            self._subs.append(
                await self.nc.subscribe(
                    f"{CONTROL_SUBJECT}.{verb}", queue=CONTROL_QUEUE_GROUP, cb=self._on_request
                )
            )

    async def stop(self) -> None:
        for sub in self._subs:
            try:
                await sub.unsubscribe()
            except Exception as exc:
                log.debug("unsubscribe: %s", exc)
        self._subs.clear()

    async def _on_request(self, msg: Msg) -> None:
        verb = msg.subject.rpartition(".")[2]
        reply: dict[str, Any]
        try:
            body = json.loads(msg.data or b"{}")
            qid = str(body.get("id") or "")
            queue_id.set(qid)
            if verb == "flush":
                reply = {"ok": True, "flushed": self.scheduler.flush(qid or None)}
            elif not qid:
                reply = {"ok": False, "error": "id required"}
            elif verb == "release":
                reply = await self.release(qid)
            else:
                reply = await self.delete(qid)
        except Exception as exc:
            log.exception("control %s failed", verb)
            reply = {"ok": False, "error": str(exc)}
        if msg.reply:
            await self.nc.publish(msg.reply, json.dumps(reply).encode())

    async def release(self, qid: str) -> dict[str, Any]:
        async with self.store.lock(qid):
            loaded = await self.store.load(qid)
            if loaded is None:
                return {"ok": False, "error": "no such message"}
            st, revision = loaded
            if st.status != "hold":
                return {"ok": False, "error": f"message is {st.status}, not held"}
            with self.tracer.start_as_current_span(
                "queue.release", context=context_from_headers(st.trace)
            ):
                st.status = "active"
                plan_state(st, self.router)
                if st.is_final():  # no recipients
                    await self.dispatcher.finish(st)
                    return {"ok": True, "jobs": 0}
                # State first: an outcome must always find the record it belongs to.
                await self.store.save(st, revision)
                trace = headers_with_context()
                await asyncio.gather(
                    *(self.dispatcher.send(st, k, d, trace) for k, d in st.dests.items())
                )
                await self.events.emit(
                    st.id, "released", dests={k: d.recipients for k, d in st.dests.items()}
                )
        log.info("released from hold")
        return {"ok": True, "jobs": len(st.dests)}

    async def delete(self, qid: str) -> dict[str, Any]:
        async with self.store.lock(qid):
            loaded = await self.store.load(qid)
            if loaded is None:
                return {"ok": False, "error": "no such message"}
            await self.dispatcher.finish(loaded[0], event="deleted")
        return {"ok": True}
