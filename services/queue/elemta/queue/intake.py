"""Intake: turn each message ingress stored into state and delivery jobs.

Per message the work is deliberately small — one KV create, one job publish per
destination, one core-NATS event, one ack — because every message of the system
passes here once.

The KV create comes first so that an outcome can never arrive for a message the
queue has no record of. A redelivered intake message (the ack was lost) finds
the record already there and re-publishes only the first-attempt jobs the record
still shows as queued; their ``Nats-Msg-Id`` makes JetStream drop the copies.
"""

from __future__ import annotations

import asyncio
import logging
import time

from nats.aio.msg import Msg

from elemta.common.envelope import Envelope
from elemta.common.jetstream import ENVELOPE_HEADER
from elemta.common.logs import queue_id
from elemta.common.telemetry import context_from_headers, headers_with_context, tracer

from .dispatch import Dispatcher
from .events import EventPublisher
from .metrics import INTAKE, INTAKE_SECONDS
from .routing import Router
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
    ) -> None:
        self.router = router
        self.store = store
        self.dispatcher = dispatcher
        self.events = events
        self.tracer = tracer(__name__)

    async def handle(self, msg: Msg) -> None:
        started = time.perf_counter()
        headers = msg.headers or {}
        try:
            env = Envelope.from_header(headers[ENVELOPE_HEADER])
        except Exception as exc:
            # Not ours to guess at: leave the message in the stream for an operator
            # and stop offering it.
            log.error("stored message %s has no usable envelope: %s", msg.subject, exc)
            await msg.term()
            return
        queue_id.set(env.id)
        st = MessageState.from_envelope(env, msg.metadata.sequence.stream, headers)
        ctx = context_from_headers(st.trace)
        with self.tracer.start_as_current_span("queue.intake", context=ctx) as span:
            span.set_attribute("elemta.queue_id", env.id)
            if not env.hold:
                plan_state(st, self.router)
            first = await self.store.create(st) is not None
            if first:
                todo = list(st.dests.items())
            else:
                loaded = await self.store.load(env.id)
                if loaded is None:  # finished meanwhile: nothing left to do
                    await msg.ack()
                    return
                st = loaded[0]
                todo = [
                    (k, d) for k, d in st.dests.items() if d.status == "queued" and d.attempt == 1
                ]
                log.info("intake redelivered; re-publishing %d job(s)", len(todo))
            trace = headers_with_context()
            await asyncio.gather(*(self.dispatcher.send(st, k, d, trace) for k, d in todo))
            if first:
                await self._record(st)
        await msg.ack()
        INTAKE.inc()
        INTAKE_SECONDS.observe(time.perf_counter() - started)

    async def _record(self, st: MessageState) -> None:
        if st.status == "hold":
            await self.events.emit(st.id, "hold", sender=st.sender, recipients=st.recipients)
            log.info("held", extra={"sender": st.sender, "nrcpt": len(st.recipients)})
            return
        await self.events.emit(
            st.id,
            "accepted",
            sender=st.sender,
            recipients=st.recipients,
            size=st.size,
            dests={k: d.recipients for k, d in st.dests.items()},
        )
        if st.is_final():  # no recipients at all: nothing will ever report back
            await self.dispatcher.finish(st)
