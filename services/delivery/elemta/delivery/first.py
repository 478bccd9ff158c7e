"""First attempts straight from ``ELEMTA_MESSAGES``: stored message in, report out.

Most mail is delivered at its first attempt, so the first attempt skips the queue:
every delivery process pulls stored messages from the shared consumer
``delivery-first`` (the body comes with the message), routes the recipients
(:mod:`elemta.common.routing`), attempts every destination at once, and publishes
one :class:`~elemta.common.envelope.FirstAttempt` to ``elemta.outcome.<id>``:
the envelope, the stream sequence and an :class:`~elemta.common.envelope.Outcome`
per destination. Only once JetStream stored the report is the message acked; the
queue then removes a message delivered to everyone, and turns anything else into
state, retries and bounces. A message delivered to everyone with nothing left to
do is ended here instead (:mod:`.finish`): its stored copy deleted and its history
recorded, no report, so it costs no job, no state and no work in the queue.

A message offered again (its ack was lost), or stored before the process last
connected to NATS (a restarted server may hand it out again), is first looked up
(:mod:`.redelivery`): when its report is stored already it is acked, not
delivered a second time.

Handed to the queue untried (a report without outcomes): held messages.
Never delivered: a copy stored after the envelope's ``deadline`` — the one ingress
stopped waiting for and answered ``451`` — reported as ``dropped`` so the queue
deletes it (see *A 451 stays a 451* in ``docs/architecture.md``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from nats.aio.msg import Msg
from opentelemetry.trace import SpanKind, Status, StatusCode

from elemta.common import logs
from elemta.common.envelope import DeliveryJob, Envelope, FirstAttempt, Outcome
from elemta.common.jetstream import ENVELOPE_HEADER
from elemta.common.replies import Reply
from elemta.common.replies import Status as RStatus
from elemta.common.routing import Router as RouteTable
from elemta.common.suspensions import Suspensions
from elemta.common.telemetry import context_from_headers, tracer

from .attempt import Router, log_attempt, suspended
from .body import BodyStore, BodyUnavailable
from .errors import not_recorded
from .finish import Finisher
from .metrics import ATTEMPT_SECONDS, ATTEMPTS, RECIPIENTS
from .outcome import Delivery, Reporter
from .redelivery import CLAIMED_RETRY, Reported
from .unrecorded import Unrecorded

__all__ = ["FirstAttemptHandler"]

log = logging.getLogger("elemta.delivery")
_tracer = tracer("elemta.delivery")


class FirstAttemptHandler:
    """Called by the worker for every stored message; always acks, naks or terms it."""

    def __init__(
        self,
        routes: RouteTable,
        bodies: BodyStore,
        router: Router,
        reporter: Reporter,
        retry_delay: float = 2.0,
        suspensions: Suspensions | None = None,
        finisher: Finisher | None = None,
        reported: Reported | None = None,
        unrecorded: Unrecorded | None = None,
    ) -> None:
        self.suspensions = suspensions
        self.unrecorded = unrecorded or Unrecorded()
        self.finisher = finisher
        self.routes = routes
        self.bodies = bodies
        self.router = router
        self.reporter = reporter
        self.retry_delay = retry_delay
        self.reported = reported or Reported(reporter.js)

    async def __call__(self, msg: Msg) -> None:
        try:
            env = Envelope.from_header((msg.headers or {})[ENVELOPE_HEADER])
        except Exception as exc:
            # Not ours to guess at: left in the stream for an operator, never offered again.
            log.error("stored message %s has no usable envelope: %s", msg.subject, exc)
            ATTEMPTS.labels("invalid").inc()
            await msg.term()
            return
        token = logs.queue_id.set(env.id)
        try:
            await self._first(msg, env)
        finally:
            logs.queue_id.reset(token)

    async def _first(self, msg: Msg, env: Envelope) -> None:
        meta = msg.metadata
        claim = ""
        if self.reported.worth_asking(msg):  # an ack lost or forgotten: reported already?
            done = await self.reported.first(env.id, meta.sequence.stream)
            if done:
                log.info("%s: offered again, not attempted again: %s", env.id, done)
                ATTEMPTS.labels("reported").inc()
                await msg.ack()
                return
            claim = f"first.{env.id}"
            if not await self.reported.claim(claim):
                log.info("%s: offered again while another attempt holds it; later", env.id)
                ATTEMPTS.labels("claimed").inc()
                await msg.nak(delay=CLAIMED_RETRY)
                return
        try:
            await self._handle(msg, env, claim)
        except BaseException:
            if claim:
                await self.reported.release(claim)
            raise

    async def _handle(self, msg: Msg, env: Envelope, claim: str) -> None:
        """Attempt, record, ack; a message sent back (nak) gives its ``claim`` back."""
        meta = msg.metadata
        report = FirstAttempt(envelope=env, msg_seq=meta.sequence.stream)
        stored_at = meta.timestamp.timestamp() if meta.timestamp else 0.0
        # The report is published inside the span: the queue's work joins the trace.
        with _tracer.start_as_current_span(
            "delivery.first_attempt",
            context=context_from_headers(msg.headers),
            kind=SpanKind.CONSUMER,
            attributes={"elemta.queue_id": env.id, "elemta.attempt": 1},
        ) as span:
            if env.deadline and stored_at > env.deadline:
                report.dropped = (
                    f"stored {stored_at - env.deadline:.3f}s after its deadline; "
                    "the client was told 451"
                )
                log.warning("%s: %s: not delivered", env.id, report.dropped)
            elif not env.hold:
                await self.unrecorded.turn()
                try:
                    await self._attempt(msg, env, report)
                except BodyUnavailable as exc:
                    log.warning("%s: %s; message offered again later", env.id, exc)
                    span.set_status(Status(StatusCode.ERROR, "body unavailable"))
                    ATTEMPTS.labels("error").inc()
                    if claim:
                        await self.reported.release(claim)
                    await msg.nak(delay=self.retry_delay)
                    return
                if _unsent(report):
                    # Nothing went out, nothing to record: the message is offered
                    # again (nak, or its ack_wait when NATS is still away).
                    log.info("%s: not sent while NATS was unreachable; offered again", env.id)
                    ATTEMPTS.labels("unsent").inc()
                    if claim:
                        await self.reported.release(claim)
                    with contextlib.suppress(Exception):
                        await msg.nak(delay=self.retry_delay)
                    return
            # what was delivered is written down before its end is stored
            entry = Reporter.first_entry(report) if _delivered(report) else None
            try:
                with self.unrecorded.storing(entry):
                    if not await self._finished(report):
                        await self.reporter.store(entry or Reporter.first_entry(report))
            except Exception as exc:
                log.error("%s: first attempt not recorded (%r); offered again", env.id, exc)
                span.set_status(Status(StatusCode.ERROR, "first attempt not recorded"))
                ATTEMPTS.labels("error").inc()
                if claim:
                    await self.reported.release(claim)
                await msg.nak(delay=1.0)
                return
        await msg.ack()

    async def _finished(self, report: FirstAttempt) -> bool:
        """Delivered to everyone with nothing left to do: ended here, not by the queue."""
        finisher = self.finisher
        return finisher is not None and finisher.applies(report) and await finisher(report)

    async def _attempt(self, msg: Msg, env: Envelope, report: FirstAttempt) -> None:
        jobs = [
            DeliveryJob(
                id=env.id,
                dest=dest.key,
                route=dest.route.model_dump(),
                domain=dest.domain,
                sender=env.sender,
                recipients=dest.recipients,
                msg_seq=report.msg_seq,
                body_object=env.body_object,
                attempt=1,
                smtputf8=env.smtputf8,
                body_8bit=env.body_8bit,
                dsn_ret=env.dsn_ret,
                dsn_envid=env.dsn_envid,
                dsn_notify={r: env.dsn_notify[r] for r in dest.recipients if r in env.dsn_notify},
                dsn_orcpt={r: env.dsn_orcpt[r] for r in dest.recipients if r in env.dsn_orcpt},
                priority=env.priority,
                wire_ready=env.wire_ready,
            )
            for dest in self.routes.plan(env.recipients)
        ]
        if not jobs:
            return
        if env.body_object:
            fetched = await self.bodies.fetch(jobs[0])
            if fetched is None:  # the queue plans jobs, which report it missing
                log.error("%s: body object %s is missing", env.id, env.body_object)
                return
            body = fetched
        else:
            body = msg.data or b""
        outcomes = await asyncio.gather(*(self._deliver(job, body) for job in jobs))
        report.outcomes = list(outcomes)
        report.routes = {job.dest: job.route for job in jobs}

    async def _deliver(self, job: DeliveryJob, body: bytes) -> Outcome:
        started = time.monotonic()
        try:
            delivery = suspended(self.suspensions, job) or await self.router.deliver(job, body)
        except Exception as exc:
            log.exception("%s: delivery failed unexpectedly", job.id)
            delivery = Delivery.everyone(
                job, "", Reply(451, "4.3.0", f"internal error in delivery: {exc!r}")
            )
        elapsed = time.monotonic() - started
        log_attempt(job, delivery, elapsed)
        ATTEMPTS.labels(delivery.summary).inc()
        ATTEMPT_SECONDS.observe(elapsed)
        for r in delivery.results:
            RECIPIENTS.labels(r.status).inc()
        return self.reporter.outcome(job, delivery)


def _unsent(report: FirstAttempt) -> bool:
    """Whether a destination was left unsent because its outcome could not be
    recorded (:data:`.errors.NOT_RECORDABLE`) and no recipient was delivered: then
    the whole attempt is dropped, not reported. With a recipient delivered, the
    report goes as usual (the unsent ones deferred), so that delivery is recorded."""
    return not _delivered(report) and any(
        not_recorded(r) for o in report.outcomes for r in o.results
    )


def _delivered(report: FirstAttempt) -> bool:
    """Whether a recipient was delivered: a copy should the process die now."""
    return any(r.status == RStatus.DELIVERED for o in report.outcomes for r in o.results)
