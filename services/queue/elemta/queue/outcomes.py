"""Outcomes: what the delivery workers report, turned into the next step.

Per recipient of an attempt:

``delivered``
    final.
``failed`` (5xx)
    final; the recipient goes into a DSN to the sender (unless NOTIFY says no).
``deferred`` (4xx, connection trouble, or no result reported)
    retried after ``retry_schedule[attempt-1]`` (last entry repeating, with
    jitter) — unless that retry would fall after the message's lifetime, in which
    case it expires now with status 4.4.7 and the last error in the DSN
    (RFC 5321 4.5.4.1: give up after at least 4-5 days; the lifetime sets it).

The retry is a new job with ``attempt + 1`` for the deferred recipients only,
parked in ELEMTA_DEFERRED (never a delayed nak, which would hold one of the
consumer's ack-pending slots for hours).

Success notices and delay warnings, for senders who asked (RFC 3461), are sent
from here through :mod:`.notices`.

Idempotency: the state records the attempt each destination is waiting for. An
outcome for another attempt, or for a destination already done, is a redelivery
of something handled already and is only acknowledged.
"""

from __future__ import annotations

import logging

from nats.aio.msg import Msg

from elemta.common.envelope import Outcome, RecipientResult
from elemta.common.logs import queue_id
from elemta.common.replies import Status
from elemta.common.telemetry import context_from_headers, headers_with_context, tracer

from .bounce import Failure, failure_from_result
from .dispatch import Dispatcher
from .events import EventPublisher
from .metrics import OUTCOMES
from .state import DestState, MessageState, StateStore

__all__ = ["Outcomes"]

log = logging.getLogger(__name__)


def last_result(result: RecipientResult, host: str, at: float) -> dict[str, object]:
    return {
        "code": result.code,
        "enhanced": result.enhanced,
        "text": result.text,
        "host": host,
        "at": at,
    }


class Outcomes:
    def __init__(self, store: StateStore, dispatcher: Dispatcher, events: EventPublisher) -> None:
        self.store = store
        self.dispatcher = dispatcher
        self.events = events
        self.tracer = tracer(__name__)

    async def handle(self, msg: Msg) -> None:
        try:
            outcome = Outcome.decode(msg.data)
        except Exception as exc:
            log.error("unreadable outcome on %s: %s", msg.subject, exc)
            await msg.term()
            return
        queue_id.set(outcome.id)
        async with self.store.lock(outcome.id):
            loaded = await self.store.load(outcome.id)
            if loaded is None:
                log.info("outcome for a message no longer queued (dest %s)", outcome.dest)
                await msg.ack()
                return
            st, revision = loaded
            d = st.dests.get(outcome.dest)
            if d is None or d.status == "done" or d.attempt != outcome.attempt:
                log.debug("duplicate outcome for %s attempt %d", outcome.dest, outcome.attempt)
                await msg.ack()
                return
            carrier = msg.headers if msg.headers and "traceparent" in msg.headers else st.trace
            ctx = context_from_headers(carrier)
            with self.tracer.start_as_current_span("queue.outcome", context=ctx) as span:
                span.set_attribute("elemta.queue_id", st.id)
                span.set_attribute("elemta.dest", outcome.dest)
                span.set_attribute("elemta.attempt", outcome.attempt)
                async with self.events.batch():
                    await self.apply(st, outcome.dest, d, outcome)
                    await self.dispatcher.commit(st, revision)
        await msg.ack()
        OUTCOMES.inc()

    async def apply(self, st: MessageState, key: str, d: DestState, outcome: Outcome) -> None:
        now = self.dispatcher.clock()
        reported = {r.recipient: r for r in outcome.results}
        failures: list[Failure] = []
        retry: list[RecipientResult] = []
        delivered: list[RecipientResult] = []
        for rcpt in d.recipients:
            r = reported.get(rcpt) or RecipientResult(
                rcpt, Status.DEFERRED, text="no result reported for this recipient"
            )
            await self.events.emit(
                st.id,
                "attempt",
                recipient=rcpt,
                dest=key,
                attempt=outcome.attempt,
                host=outcome.host,
                status=r.status,
                code=r.code,
                enhanced=r.enhanced,
                text=r.text,
            )
            if r.status == Status.DELIVERED:
                st.final[rcpt] = Status.DELIVERED
                delivered.append(r)
                await self.events.emit(
                    st.id, Status.DELIVERED, recipient=rcpt, host=outcome.host, code=r.code
                )
            elif r.status == Status.FAILED:
                failures.append(failure_from_result(r, outcome.host))
            else:
                retry.append(r)
            if r.status != Status.DELIVERED or not d.last:
                d.last = last_result(r, outcome.host, now)

        d.recipients = []
        notices = self.dispatcher.notices
        kind = str(d.route.get("kind", ""))
        success = await notices.delivered(st, delivered, outcome.host, kind)
        if success:
            await self.events.emit(st.id, "notice", notice="delivered", dsn=success)
        if retry:
            due = now + self.dispatcher.retry_delay(outcome.attempt)
            if outcome.not_before:  # a suspended destination: again when it ends
                due = max(outcome.not_before, now)
            if due > self.dispatcher.expires_at(st):
                failures.extend(failure_from_result(r, outcome.host, expired=True) for r in retry)
            else:
                d.recipients = [r.recipient for r in retry]
                d.attempt = outcome.attempt + 1
                d.status = "deferred"
                d.next_attempt = due
                warning = await notices.delayed(st, retry, outcome.host, now)
                if warning:
                    await self.events.emit(st.id, "notice", notice="delayed", dsn=warning)
                await self.dispatcher.defer(st, key, d, due, headers_with_context())
                for r in retry:
                    await self.events.emit(
                        st.id,
                        "deferred",
                        recipient=r.recipient,
                        dest=key,
                        attempt=d.attempt,
                        next_attempt=round(due, 3),
                        code=r.code,
                        text=r.text,
                    )
        await self.dispatcher.give_up(st, failures)
        if not d.recipients:
            d.status = "done"
            d.next_attempt = 0.0
