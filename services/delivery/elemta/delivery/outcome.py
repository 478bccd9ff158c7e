"""What an attempt produced, and reporting it to the queue as an :class:`Outcome`.

The outcome is published to ``elemta.outcome.<queue id>`` and the publish waits
for JetStream's acknowledgement: only a stored outcome lets the worker ack the
job. Its ``Nats-Msg-Id`` names the job message (queue id and stream sequence),
so when a job is redelivered after its outcome was stored but before the ack
reached the server, the second outcome is dropped as a duplicate.

A publish that fails (no stream answered while a JetStream cluster elects a
leader, a node gone, a timeout) is tried again with the same ``Nats-Msg-Id``
for up to ``OUTCOME_PATIENCE`` seconds before the job is given back: the mail
has been delivered by then, and a job given back is a job delivered twice.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections import Counter
from dataclasses import dataclass, field

from nats.js import JetStreamContext

from elemta.common.envelope import DeliveryJob, FirstAttempt, Outcome, RecipientResult
from elemta.common.jetstream import OUTCOME_SUBJECT
from elemta.common.patience import Patience
from elemta.common.replies import Reply, Status
from elemta.common.telemetry import headers_with_context

from .journal import Entry

__all__ = ["OUTCOME_PATIENCE", "Delivery", "Reporter", "worker_name"]

log = logging.getLogger(__name__)

OUTCOME_PATIENCE = 30.0  # seconds an outcome publish is retried (the job is kept in progress)


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class Delivery:
    """The result of one attempt: who answered and what, per recipient."""

    host: str
    results: list[RecipientResult] = field(default_factory=list)
    # Epoch seconds before which the queue should not try again (a suspended
    # destination); 0: its retry schedule decides.
    not_before: float = 0.0

    @classmethod
    def everyone(cls, job: DeliveryJob, host: str, reply: Reply) -> Delivery:
        return cls(host, [reply.result(r) for r in job.recipients])

    @property
    def summary(self) -> str:
        """delivered, deferred or failed when all recipients agree, else mixed."""
        statuses = {r.status for r in self.results}
        return statuses.pop() if len(statuses) == 1 else "mixed" if statuses else "empty"

    @property
    def delivered(self) -> bool:
        """Whether a recipient was delivered (made a copy should the process die now)."""
        return any(r.status == Status.DELIVERED for r in self.results)

    def counts(self) -> Counter[str]:
        return Counter(r.status for r in self.results)

    @property
    def first(self) -> RecipientResult | None:
        """The most telling result: the first one that did not succeed, else the first."""
        for r in self.results:
            if r.status != Status.DELIVERED:
                return r
        return self.results[0] if self.results else None


class Reporter:
    def __init__(
        self, js: JetStreamContext, publish_timeout: float, patience: float = OUTCOME_PATIENCE
    ) -> None:
        self.js = js
        self.timeout = publish_timeout
        self.patience = patience
        self.worker = worker_name()

    def outcome(self, job: DeliveryJob, delivery: Delivery) -> Outcome:
        return Outcome(
            id=job.id,
            dest=job.dest,
            domain=job.domain,
            attempt=job.attempt,
            host=delivery.host,
            results=delivery.results,
            worker=self.worker,
            finished_at=time.time(),
            not_before=delivery.not_before,
        )

    @staticmethod
    def first_entry(report: FirstAttempt) -> Entry:
        """A first-attempt report as stored. Its ``Nats-Msg-Id`` names the stored
        message, so a report repeated after a lost ack is dropped as a duplicate."""
        qid = report.envelope.id
        return Entry(qid, f"first.{qid}.{report.msg_seq}", report.encode())

    def outcome_entry(self, job: DeliveryJob, delivery: Delivery, job_seq: int) -> Entry:
        """A job's outcome as stored; its ``Nats-Msg-Id`` names the job message."""
        outcome = self.outcome(job, delivery)
        return Entry(job.id, f"outcome.{job.id}.{job_seq}", outcome.encode())

    async def publish_first(self, report: FirstAttempt) -> None:
        """Store a first-attempt report; raises when it was not acknowledged."""
        await self.store(self.first_entry(report))

    async def publish(self, job: DeliveryJob, delivery: Delivery, job_seq: int) -> None:
        """Store the outcome in JetStream; raises when it was not acknowledged."""
        await self.store(self.outcome_entry(job, delivery, job_seq))

    async def store(self, entry: Entry) -> None:
        """Store a report; raises when it was not acknowledged."""
        headers = headers_with_context({"Nats-Msg-Id": entry.msg_id})
        await self._store(entry.qid, entry.report, headers)

    async def _store(self, qid: str, data: bytes, headers: dict[str, str]) -> None:
        """Publish to ``elemta.outcome.<qid>``, again for ``patience`` seconds while
        JetStream does not acknowledge it; raises the last error after that."""
        patience = Patience(self.patience)
        while True:
            try:
                await self.js.publish(
                    f"{OUTCOME_SUBJECT}.{qid}", data, timeout=self.timeout, headers=headers
                )
                return
            except Exception as exc:  # the same Nats-Msg-Id: a retry cannot store it twice
                log.warning("%s: outcome not stored yet (%r); trying again", qid, exc)
                if not await patience.pause():
                    raise
