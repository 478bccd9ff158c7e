"""Operator requests: the queue owns the state, so every change to a message comes here.

Core NATS request/reply (not JetStream: a request with no queue to answer should
fail at once, not wait in a stream), in the queue group ``elemta-queue``, on
``elemta.queue.<verb>``. The api service asks; so may an operator with NATS
access.

Messages — ``{"id": "<queue id>"}`` for one, or ``{"ids": [...]}`` for many
(the answer then is ``{"ok": true, "touched": n, "results": {id: answer}}``);
``"by"`` names who asked (recorded in the event):

``hold``
    Stop delivering: jobs waiting in ELEMTA_DELIVERY are removed, parked retries
    become stale (each pending destination moves to the next attempt number, so
    an outcome of an attempt already under way is ignored), status ``hold``.
    A held message is not retried and does not expire while held (its lifetime
    is checked when a retry comes due). ``hold`` event.
``release``
    Hand a held message to delivery again, every pending destination at once
    (a message the policy held is routed first). ``released`` event.
``retry``
    Make the message's parked retries due now (``postqueue -i``).
``flush``
    The same for one message (``{"id"}``) or all (``{}``): ``postqueue -f``.
``bounce``
    Give up on every pending recipient now and send the sender a DSN
    (``5.0.0``, "returned by the administrator"); the message is finished.
``delete``
    Drop a message without notice: stored message, body, state, waiting jobs
    (``deleted`` event).

Destinations — ``{"domain": "...", "reason": "...", "until": <epoch s>}``:

``suspend``
    No delivery attempt to the domain until ``until`` (see
    :mod:`elemta.common.suspensions`).
``unsuspend``
    Lift it; the domain's parked jobs are made due at once.

Every answer is ``{"ok": true, ...}`` or ``{"ok": false, "error": "..."}``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext

from elemta.common.logs import queue_id
from elemta.common.names import (
    CONTROL_QUEUE_GROUP,
    CONTROL_SUBJECT,
    CONTROL_VERBS,
    DELIVERY_STREAM,
    DELIVERY_SUBJECT,
    delivery_subject,
)
from elemta.common.routing import Router
from elemta.common.suspensions import Suspension, Suspensions, valid_domain
from elemta.common.telemetry import context_from_headers, headers_with_context, tracer

from .bounce import Failure
from .dispatch import Dispatcher
from .events import EventPublisher
from .intake import plan_state
from .scheduler import Scheduler
from .state import MessageState, StateStore

__all__ = ["CONTROL_SUBJECT", "Control"]

log = logging.getLogger(__name__)

MAX_IDS = 10000  # one bulk request; the API pages larger selections

Action = Callable[[str, str], Awaitable[dict[str, Any]]]


class Control:
    def __init__(
        self,
        nc: NATS,
        router: Router,
        store: StateStore,
        dispatcher: Dispatcher,
        scheduler: Scheduler,
        events: EventPublisher,
        suspensions: Suspensions | None = None,
        js: JetStreamContext | None = None,
    ) -> None:
        self.nc = nc
        self.js = js
        self.router = router
        self.store = store
        self.dispatcher = dispatcher
        self.scheduler = scheduler
        self.events = events
        self.suspensions = suspensions
        self.tracer = tracer(__name__)
        self._subs: list[Subscription] = []
        self._actions: dict[str, Action] = {
            "hold": self.hold,
            "release": self.release,
            "retry": self.retry,
            "bounce": self.bounce,
            "delete": self.delete,
        }

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
            if not isinstance(body, dict):
                raise ValueError("a JSON object expected")
            reply = await self.handle(verb, body)
        except Exception as exc:
            log.exception("control %s failed", verb)
            reply = {"ok": False, "error": str(exc)}
        if msg.reply:
            await self.nc.publish(msg.reply, json.dumps(reply).encode())

    async def handle(self, verb: str, body: dict[str, Any]) -> dict[str, Any]:
        by = str(body.get("by") or "")
        if verb == "suspend":
            return await self.suspend(body, by)
        if verb == "unsuspend":
            return await self.unsuspend(str(body.get("domain") or ""))
        qid = str(body.get("id") or "")
        if verb == "flush":
            queue_id.set(qid)
            return {"ok": True, "flushed": self.scheduler.flush(qid or None)}
        action = self._actions.get(verb)
        if action is None:
            return {"ok": False, "error": f"unknown request {verb}"}
        if "ids" in body:
            ids = [str(i) for i in body.get("ids") or []][:MAX_IDS]
            results: dict[str, dict[str, Any]] = {}
            for one in ids:
                queue_id.set(one)
                results[one] = await action(one, by)
            touched = sum(1 for r in results.values() if r.get("ok"))
            return {"ok": True, "touched": touched, "results": results}
        if not qid:
            return {"ok": False, "error": "id required"}
        queue_id.set(qid)
        return await action(qid, by)

    # -- messages ------------------------------------------------------------

    async def _drop_waiting_jobs(self, qid: str) -> None:
        """Remove the message's jobs still waiting in ELEMTA_DELIVERY."""
        if self.js is None:
            return
        try:
            await self.js.purge_stream(DELIVERY_STREAM, subject=f"{DELIVERY_SUBJECT}.{qid}")
            if self.dispatcher.priorities.enabled:  # jobs of the other classes
                await self.js.purge_stream(DELIVERY_STREAM, subject=delivery_subject(qid, "*"))
        except Exception as exc:  # a job then arrives and is ignored or delivered once
            log.warning("waiting jobs not removed: %r", exc)

    async def hold(self, qid: str, by: str = "") -> dict[str, Any]:
        async with self.store.lock(qid):
            loaded = await self.store.load(qid)
            if loaded is None:
                return {"ok": False, "error": "no such message"}
            st, revision = loaded
            if st.status == "hold":
                return {"ok": False, "error": "message is held already"}
            for d in st.dests.values():
                if d.status != "done":
                    # The next attempt number: outcomes of the attempt under way and
                    # the parked retry become stale and are dropped.
                    d.attempt += 1
                    d.status = "held"
                    d.next_attempt = 0.0
            st.status = "hold"
            await self.store.save(st, revision)
            await self._drop_waiting_jobs(qid)
            await self.events.emit(st.id, "hold", by=by)
        log.info("held", extra={"by": by})
        return {"ok": True}

    async def release(self, qid: str, by: str = "") -> dict[str, Any]:
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
                if not st.dests:  # held by the policy at intake: not routed yet
                    plan_state(st, self.router)
                todo = {k: d for k, d in st.dests.items() if d.status in ("queued", "held")}
                for d in todo.values():
                    d.status = "queued"
                if st.is_final():  # no recipients
                    await self.dispatcher.finish(st)
                    return {"ok": True, "jobs": 0}
                # State first: an outcome must always find the record it belongs to.
                await self.store.save(st, revision)
                trace = headers_with_context()
                await asyncio.gather(
                    *(self.dispatcher.send(st, k, d, trace) for k, d in todo.items())
                )
                details: dict[str, Any] = {"dests": {k: d.recipients for k, d in todo.items()}}
                if by:
                    details["by"] = by
                await self.events.emit(st.id, "released", **details)
        log.info("released from hold")
        return {"ok": True, "jobs": len(todo)}

    async def retry(self, qid: str, by: str = "") -> dict[str, Any]:
        """Parked retries due now; ok only when there was one to move."""
        n = self.scheduler.flush(qid)
        if not n:
            loaded = await self.store.load(qid)
            if loaded is None:
                return {"ok": False, "error": "no such message"}
            return {"ok": False, "error": f"no retry waiting (message is {loaded[0].status})"}
        await self.events.emit(qid, "retry", by=by)
        return {"ok": True, "flushed": n}

    async def bounce(self, qid: str, by: str = "") -> dict[str, Any]:
        async with self.store.lock(qid):
            loaded = await self.store.load(qid)
            if loaded is None:
                return {"ok": False, "error": "no such message"}
            st, _revision = loaded
            pending = self._pending(st)
            for d in st.dests.values():
                if d.status != "done":
                    d.attempt += 1  # outcomes of an attempt under way are stale
                    d.recipients = []
                    d.status = "done"
            st.status = "active"
            failures = [
                Failure(
                    recipient=r,
                    status="5.0.0",
                    code=550,
                    text="returned to the sender by the mail administrator"
                    + (f" ({by})" if by else ""),
                )
                for r in pending
            ]
            await self._drop_waiting_jobs(qid)
            async with self.events.batch():
                await self.dispatcher.give_up(st, failures)
                await self.dispatcher.finish(st)
        log.info("bounced by the administrator", extra={"by": by, "nrcpt": len(pending)})
        return {"ok": True, "bounced": len(pending)}

    @staticmethod
    def _pending(st: MessageState) -> list[str]:
        if not st.dests:  # held at intake: nothing routed, nothing final
            return [r for r in st.recipients if r not in st.final]
        return [r for d in st.dests.values() if d.status != "done" for r in d.recipients]

    async def delete(self, qid: str, by: str = "") -> dict[str, Any]:
        async with self.store.lock(qid):
            loaded = await self.store.load(qid)
            if loaded is None:
                return {"ok": False, "error": "no such message"}
            await self._drop_waiting_jobs(qid)
            await self.dispatcher.finish(loaded[0], event="deleted")
        return {"ok": True}

    # -- destinations -----------------------------------------------------------

    async def suspend(self, body: dict[str, Any], by: str) -> dict[str, Any]:
        if self.suspensions is None:
            return {"ok": False, "error": "suspensions unavailable"}
        domain = str(body.get("domain") or "").lower().rstrip(".")
        if not valid_domain(domain):
            return {"ok": False, "error": f"{domain!r} is not a domain"}
        until = float(body.get("until") or 0)
        now = self.dispatcher.clock()
        if until <= now:
            return {"ok": False, "error": "until must be in the future"}
        s = Suspension(domain, str(body.get("reason") or ""), until, now, by)
        await self.suspensions.put(s)
        log.info("destination %s suspended until %.0f", domain, until, extra={"by": by})
        return {"ok": True, "suspension": vars(s)}

    async def unsuspend(self, domain: str) -> dict[str, Any]:
        if self.suspensions is None:
            return {"ok": False, "error": "suspensions unavailable"}
        domain = domain.lower().rstrip(".")
        if not await self.suspensions.remove(domain):
            return {"ok": False, "error": f"{domain} is not suspended"}
        flushed = await self._flush_domain(domain)
        log.info("suspension of %s lifted; %d parked job(s) due now", domain, flushed)
        return {"ok": True, "flushed": flushed}

    async def _flush_domain(self, domain: str) -> int:
        n = 0
        for qid in self.scheduler.owners():
            loaded = await self.store.load(qid)
            if loaded is None:
                continue
            if any(d.domain == domain for d in loaded[0].dests.values() if d.status != "done"):
                n += self.scheduler.flush(qid)
        return n
