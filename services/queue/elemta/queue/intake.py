"""Intake: a message enters the queue through delivery's report of its first attempt.

Delivery makes every message's first attempt straight from ``ELEMTA_MESSAGES``
and reports it as a :class:`~elemta.common.envelope.FirstAttempt` on
``elemta.outcome.<id>``. Per report:

* every recipient delivered (the common case): the stored message is removed at
  once; no state is ever written, and the events of the whole journey
  (``accepted``, ``attempt``, ``delivered``, ``done``) go out as one record;
* anything else: the stored message is copied to ``elemta.kept.<id>``
  (:meth:`.Dispatcher.keep`: the queue works from that copy, which keeps mail
  waiting for retries out of the way of the bulk removal of first-attempt copies),
  the state is created in KV from the report's destinations (naming the copy; the
  first-attempt copy is deleted then), then
  the outcomes are applied as for any later attempt (retries parked in
  ``ELEMTA_DEFERRED``, bounces), and the state saved — or the message finished
  when nothing is left;
* no outcomes (a held message, or one delivery handed over untried): the state is
  planned from the recipients and first-attempt jobs go to ``ELEMTA_DELIVERY``,
  as for a released message;
* ``dropped`` (stored after the deadline ingress gave its PubAck, the client was
  told ``451``): the stored copy is deleted and a ``withdrawn`` event recorded.

The KV create comes before any job or retry is published, so that an outcome can
never arrive for a message the queue has no record of. A redelivered report (the
ack was lost) finds the record there and re-publishes only the first-attempt jobs
the record still shows as queued; ``Nats-Msg-Id`` makes JetStream drop copies.
A redelivered report of a finished message finishes it again, which is harmless.
"""

from __future__ import annotations

import asyncio
import logging
import time

from nats.aio.msg import Msg

from elemta.common.envelope import FirstAttempt
from elemta.common.logs import queue_id
from elemta.common.replies import Status
from elemta.common.routing import Router
from elemta.common.telemetry import context_from_headers, headers_with_context, tracer

from .dispatch import Dispatcher
from .events import EventPublisher
from .metrics import INTAKE, INTAKE_SECONDS
from .outcomes import Outcomes
from .state import DestState, MessageState, StateStore

__all__ = ["Intake", "plan_state"]

log = logging.getLogger(__name__)


def plan_state(st: MessageState, router: Router) -> None:
    """Fill ``st.dests`` from the recipients: one destination per route key."""
    st.dests = {
        dest.key: DestState(
            route=dest.route.model_dump(), domain=dest.domain, recipients=dest.recipients
        )
        for dest in router.plan(st.recipients)
    }


class Intake:
    def __init__(
        self,
        router: Router,
        store: StateStore,
        dispatcher: Dispatcher,
        events: EventPublisher,
        outcomes: Outcomes,
    ) -> None:
        self.router = router
        self.store = store
        self.dispatcher = dispatcher
        self.events = events
        self.outcomes = outcomes
        self.tracer = tracer(__name__)

    async def handle(self, msg: Msg) -> None:
        started = time.perf_counter()
        try:
            report = FirstAttempt.decode(msg.data)
        except Exception as exc:
            log.error("unreadable first-attempt report on %s: %s", msg.subject, exc)
            await msg.term()
            return
        env = report.envelope
        queue_id.set(env.id)
        st = MessageState.from_envelope(env, report.msg_seq, msg.headers)
        ctx = context_from_headers(st.trace)
        with self.tracer.start_as_current_span("queue.intake", context=ctx) as span:
            span.set_attribute("elemta.queue_id", env.id)
            async with self.store.lock(env.id), self.events.batch():
                if report.dropped:
                    await self._withdrawn(st, report.dropped)
                elif report.outcomes:
                    await self._tried(st, report)
                else:
                    await self._untried(st)
        await msg.ack()
        INTAKE.inc()
        INTAKE_SECONDS.observe(time.perf_counter() - started)

    async def _accepted(self, st: MessageState) -> None:
        await self.events.emit(
            st.id,
            "accepted",
            sender=st.sender,
            recipients=st.recipients,
            size=st.size,
            dests={k: d.recipients for k, d in st.dests.items()},
        )

    async def _tried(self, st: MessageState, report: FirstAttempt) -> None:
        for o in report.outcomes:
            st.dests[o.dest] = DestState(
                route=report.routes.get(o.dest, {}),
                domain=o.domain,
                recipients=[r.recipient for r in o.results],
            )
        await self._accepted(st)
        everyone = all(r.status == Status.DELIVERED for o in report.outcomes for r in o.results)
        if everyone:  # the common case: no state, no job, one history record
            for o in report.outcomes:
                await self.outcomes.apply(st, o.dest, st.dests[o.dest], o)
            await self.dispatcher.finish(st, stored_state=False)
            return
        revision = await self._create(st)
        if revision is None:  # a redelivered report: applied already
            log.info("first-attempt report redelivered; already applied")
            return
        for o in report.outcomes:
            await self.outcomes.apply(st, o.dest, st.dests[o.dest], o)
        await self.dispatcher.commit(st, revision)

    async def _create(self, st: MessageState) -> int | None:
        """Create the state of a message the queue takes over, naming the copy it
        keeps (:meth:`.Dispatcher.keep`), then drop the first-attempt copy; None
        when the state exists already (a redelivered report: nothing is copied)."""
        if await self.store.load(st.id) is not None:
            return None
        first_copy = await self.dispatcher.keep(st)
        revision = await self.store.create(st)
        if revision is not None:
            await self.dispatcher.drop_first_copy(first_copy)
        return revision

    async def _untried(self, st: MessageState) -> None:
        if st.status != "hold":
            plan_state(st, self.router)
        first = await self._create(st) is not None
        if first:
            todo = list(st.dests.items())
        else:
            loaded = await self.store.load(st.id)
            if loaded is None:  # finished meanwhile: nothing left to do
                return
            st = loaded[0]
            todo = [(k, d) for k, d in st.dests.items() if d.status == "queued" and d.attempt == 1]
            log.info("intake redelivered; re-publishing %d job(s)", len(todo))
        trace = headers_with_context()
        await asyncio.gather(*(self.dispatcher.send(st, k, d, trace) for k, d in todo))
        if not first:
            return
        if st.status == "hold":
            await self.events.emit(st.id, "hold", sender=st.sender, recipients=st.recipients)
            log.info("held", extra={"sender": st.sender, "nrcpt": len(st.recipients)})
            return
        await self._accepted(st)
        if st.is_final():  # no recipients at all: nothing will ever report back
            await self.dispatcher.finish(st)

    async def _withdrawn(self, st: MessageState, why: str) -> None:
        await self.events.emit(st.id, "withdrawn", sender=st.sender, reason=why)
        await self.dispatcher.finish(st, event="", stored_state=False)
