"""One delivery attempt: job in, outcome out, job acked.

For each job the handler fetches the stored message, picks the transport for
the job's route (``mx``/``smtp`` SMTP, ``lmtp`` LMTP, ``local`` Maildir), delivers,
logs one Postfix-style line, publishes the :class:`~elemta.common.envelope.Outcome`
and, only once JetStream stored it, acks the job. A job whose message is gone
is acked with no outcome, and so is a job offered again whose outcome is stored
already (:mod:`.redelivery`); a job that cannot be reported goes back (nak) for
another worker. The attempt runs in the ``delivery.attempt`` span, a child of
the trace context that arrived in the job's headers, with the attributes
``elemta.queue_id``, ``elemta.dest``, ``elemta.attempt``, ``elemta.host``,
``elemta.result`` and ``smtp.reply_code`` (of the most telling recipient).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from nats.aio.msg import Msg
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from elemta.common import logs
from elemta.common.config import Config, Route
from elemta.common.envelope import DeliveryJob
from elemta.common.replies import Reply
from elemta.common.replies import Status as RcptStatus
from elemta.common.resolver import DnsError, Resolver
from elemta.common.suspensions import Suspensions
from elemta.common.telemetry import context_from_headers, tracer

from .body import BodyStore, BodyUnavailable
from .lmtp import LmtpTransport
from .maildir import MaildirTransport
from .metrics import ATTEMPT_SECONDS, ATTEMPTS, RECIPIENTS
from .outcome import Delivery, Reporter
from .redelivery import CLAIMED_RETRY, Reported
from .shaping import Backlogged, Shaper
from .shapingrules import destination_of
from .smtp import SmtpTransport
from .tlspolicy import ResultSink, TlsPolicy
from .transport import always_recordable
from .unrecorded import Unrecorded

__all__ = ["AttemptHandler", "Router", "log_attempt"]

log = logging.getLogger("elemta.delivery")
_tracer = tracer("elemta.delivery")

# Postfix's words for the outcome of a delivery.
_POSTFIX_STATUS: dict[str, str] = {
    RcptStatus.DELIVERED: "sent",
    RcptStatus.DEFERRED: "deferred",
    RcptStatus.FAILED: "bounced",
}


class Router:
    """Route kind -> transport."""

    def __init__(
        self,
        cfg: Config,
        resolver: Resolver,
        tls: TlsPolicy | None = None,
        results: ResultSink | None = None,
        shaper: Shaper | None = None,
        recordable: Callable[[], bool] = always_recordable,
    ) -> None:
        # recordable: whether an outcome can be recorded now (NATS reachable); SMTP
        # and LMTP send no end of data while it cannot (.transport.always_recordable)
        self.smtp = SmtpTransport(cfg, resolver, tls, results, recordable)
        self.shaper = shaper
        self.lmtp = LmtpTransport(cfg, resolver, recordable)
        self.maildir = MaildirTransport(cfg.maildir_root)

    async def deliver(
        self, job: DeliveryJob, body: bytes, redeliveries: int | None = None
    ) -> Delivery:
        """Deliver by the job's route. With ``redeliveries`` (a job from the work
        queue) traffic shaping raises :class:`Backlogged` when the job must wait;
        without (a first attempt), the job is reported deferred instead."""
        try:
            route = Route(**job.route)
        except Exception:
            return Delivery.everyone(job, "", Reply(451, "4.3.5", f"unusable route {job.route!r}"))
        if route.kind in ("mx", "smtp"):
            try:
                rule = await self.shaper.rule_for(job, route) if self.shaper is not None else None
            except DnsError as exc:  # as the transport would find: ask the DNS only once
                return Delivery.everyone(job, destination_of(job, route), exc.reply)
            if rule is None or self.shaper is None:
                return await self.smtp.deliver(job, body, route)
            try:
                return await self.shaper.deliver(
                    job,
                    rule,
                    lambda pacer, claim: self.smtp.deliver(job, body, route, pacer, claim),
                    redeliveries or 1,
                )
            except Backlogged as exc:
                if redeliveries is not None:
                    raise
                return Delivery.everyone(job, "", Reply(451, "4.7.0", f"traffic shaping: {exc}"))
        if route.kind == "lmtp":
            return await self.lmtp.deliver(job, body, route)
        if route.kind == "local":
            return await self.maildir.deliver(job, body)
        return Delivery.everyone(job, "", Reply(451, "4.3.5", f"unknown route kind {route.kind!r}"))

    async def close(self) -> None:
        await self.smtp.pool.close()
        await self.lmtp.pool.close()


class AttemptHandler:
    """Called by the worker for every job message; always acks, naks or terms it."""

    def __init__(
        self,
        bodies: BodyStore,
        router: Router,
        reporter: Reporter,
        retry_delay: float = 2.0,
        suspensions: Suspensions | None = None,
        reported: Reported | None = None,
        unrecorded: Unrecorded | None = None,
    ) -> None:
        self.unrecorded = unrecorded or Unrecorded()
        self.bodies = bodies
        self.router = router
        self.reporter = reporter
        self.retry_delay = retry_delay
        self.suspensions = suspensions
        self.reported = reported or Reported(reporter.js)

    def _suspended(self, job: DeliveryJob) -> Delivery | None:
        return suspended(self.suspensions, job)

    async def __call__(self, msg: Msg) -> None:
        started = time.monotonic()
        try:
            job = DeliveryJob.decode(msg.data)
        except Exception as exc:
            log.error("undecodable delivery job dropped: %s", exc)
            ATTEMPTS.labels("invalid").inc()
            await msg.term()
            return
        token = logs.queue_id.set(job.id)
        try:
            result = await self._attempt(msg, job, started)
        finally:
            logs.queue_id.reset(token)
        ATTEMPTS.labels(result).inc()
        ATTEMPT_SECONDS.observe(time.monotonic() - started)

    async def _attempt(self, msg: Msg, job: DeliveryJob, started: float) -> str:
        attributes: dict[str, str | int] = {
            "elemta.queue_id": job.id,
            "elemta.dest": job.dest,
            "elemta.attempt": job.attempt,
        }
        with _tracer.start_as_current_span(
            "delivery.attempt",
            context=context_from_headers(msg.headers),
            kind=SpanKind.CONSUMER,
            attributes=attributes,
        ) as span:
            claim = ""
            if self.reported.worth_asking(msg):  # an ack lost or forgotten: reported already?
                done = await self.reported.job(job.id, msg.metadata.sequence.stream)
                if done:
                    log.info("%s: job offered again, not attempted again: %s", job.id, done)
                    await msg.ack()
                    return "reported"
                claim = f"job.{job.id}.{msg.metadata.sequence.stream}"
                if not await self.reported.claim(claim):
                    log.info("%s: job offered again while another attempt holds it", job.id)
                    await msg.nak(delay=CLAIMED_RETRY)
                    return "claimed"
            try:
                return await self._attempt_claimed(msg, job, started, span, claim)
            except BaseException:
                if claim:
                    await self.reported.release(claim)
                raise

    async def _attempt_claimed(
        self, msg: Msg, job: DeliveryJob, started: float, span: Span, claim: str
    ) -> str:
        """The attempt itself; a job sent back (nak) gives its ``claim`` back."""
        try:
            body = await self.bodies.fetch(job)
        except BodyUnavailable as exc:
            log.warning("%s: %s; job returned to the queue", job.id, exc)
            span.set_status(Status(StatusCode.ERROR, "body unavailable"))
            if claim:
                await self.reported.release(claim)
            await msg.nak(delay=self.retry_delay)
            return "error"
        if body is None:
            log.info("%s: stored message is gone; job dropped without outcome", job.id)
            await msg.ack()
            return "missing"
        await self.unrecorded.turn()
        try:
            delivery = self._suspended(job) or await self.router.deliver(
                job, body, msg.metadata.num_delivered or 1
            )
        except Backlogged as exc:
            # Shaping: no slot now. Back to the stream, so that this worker's
            # capacity goes to other destinations meanwhile.
            log.debug("%s: %s; job handed back for %.1fs", job.id, exc, exc.delay)
            if claim:
                await self.reported.release(claim)
            await msg.nak(delay=exc.delay)
            return "backlogged"
        except Exception as exc:
            log.exception("%s: delivery failed unexpectedly", job.id)
            delivery = Delivery.everyone(
                job, "", Reply(451, "4.3.0", f"internal error in delivery: {exc!r}")
            )
        first = delivery.first
        span.set_attribute("elemta.host", delivery.host)
        span.set_attribute("elemta.result", delivery.summary)
        if first is not None:
            span.set_attribute("smtp.reply_code", first.code)
        log_attempt(job, delivery, time.monotonic() - started)
        entry = self.reporter.outcome_entry(job, delivery, msg.metadata.sequence.stream)
        try:
            with self.unrecorded.storing(entry if delivery.delivered else None):
                await self.reporter.store(entry)
        except Exception as exc:
            log.error("%s: outcome not recorded (%r); job returned to the queue", job.id, exc)
            span.set_status(Status(StatusCode.ERROR, "outcome not recorded"))
            if claim:
                await self.reported.release(claim)
            await msg.nak(delay=1.0)
            return "error"
        await msg.ack()
        for r in delivery.results:
            RECIPIENTS.labels(r.status).inc()
        return delivery.summary


def suspended(suspensions: Suspensions | None, job: DeliveryJob) -> Delivery | None:
    """No attempt to a suspended destination: every recipient deferred until its end."""
    s = suspensions.active(job.domain) if suspensions is not None else None
    if s is None:
        return None
    reply = Reply(451, "4.4.5", f"destination {s.domain} suspended: {s.reason}")
    delivery = Delivery.everyone(job, "", reply)
    delivery.not_before = s.until
    return delivery


def log_attempt(job: DeliveryJob, delivery: Delivery, elapsed: float) -> None:
    """One Postfix-style line per attempt."""
    first = delivery.first
    summary = delivery.summary
    status = _POSTFIX_STATUS.get(summary, summary)
    code, enhanced, text = (first.code, first.enhanced, first.text) if first else (0, "", "")
    detail = f"{code} {enhanced} {text}".strip()
    if summary == "mixed":
        counts = delivery.counts()
        detail = ", ".join(f"{n} {_POSTFIX_STATUS[s]}" for s, n in sorted(counts.items()))
        detail += f"; first problem: {code} {enhanced} {text}"
    logs.info(
        log,
        f"{job.id}: to=<{'>,<'.join(job.recipients)}>, relay={delivery.host or 'none'}, "
        f"delay={elapsed:.2f}, dsn={enhanced}, status={status} ({detail})",
        dest=job.dest,
        attempt=job.attempt,
        host=delivery.host,
        code=code,
        status=status,
    )
