"""The actions intake, outcomes, scheduler and control share.

Publishing a job, parking it for a retry, giving up on recipients and finishing a
message each happen from more than one place; they live here so that the message
ids that make them idempotent are built in exactly one way:

* delivery jobs: ``Nats-Msg-Id: <id>.<dest-hash>.<attempt>`` on
  ``elemta.delivery.<id>`` — a redelivered intake or outcome, or a scheduler
  restarted half-way, publishes the same id and JetStream drops the copy;
* deferred jobs: the same id on ``elemta.deferred.<id>`` (another stream, so
  another duplicate window), with ``Elemta-Due`` holding the epoch seconds;
* bounces: ``bounce.<id>.<n>`` (see :mod:`.bounce`);
* the copy of a message the queue takes over: ``kept.<id>`` on ``elemta.kept.<id>``.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable

from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from nats.js.kv import KeyValue
from nats.js.object_store import ObjectStore

from elemta.common.config import Config
from elemta.common.envelope import DeliveryJob
from elemta.common.jetstream import (
    DEFERRED_SUBJECT,
    DUE_HEADER,
    MESSAGES_STREAM,
    delete_stream_msg,
)
from elemta.common.names import delivery_subject, kept_subject, stored_subjects
from elemta.common.priority import Priorities
from elemta.common.replies import Status
from elemta.common.routing import dest_hash

from .bounce import Bouncer, Failure
from .events import EventPublisher
from .notices import Notices, failures_to_notify
from .state import DestState, MessageState, StateStore

__all__ = ["Dispatcher", "delete_stream_msg", "job_msg_id"]

log = logging.getLogger(__name__)


def job_msg_id(queue_id: str, dest: str, attempt: int) -> str:
    return f"{queue_id}.{dest_hash(dest)}.{attempt}"


class Dispatcher:
    def __init__(
        self,
        cfg: Config,
        nc: NATS,
        js: JetStreamContext,
        store: StateStore,
        events: EventPublisher,
        bouncer: Bouncer,
        objects: ObjectStore | None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cfg = cfg
        # The queue's one clock (epoch seconds): retries, lifetimes and the scheduler
        # read it, so that tests move time instead of waiting for it.
        self.clock = clock
        self.nc = nc
        self.js = js
        self.store = store
        self.events = events
        self.bouncer = bouncer
        self.notices = Notices(bouncer, cfg.queue.delay_warning_time)
        self.priorities = Priorities(cfg.priorities)
        self.objects = objects
        # KV ELEMTA_FAILED (set by the service): the last state of failed messages.
        self.failed: KeyValue | None = None
        # Set by the scheduler: told about every job parked in ELEMTA_DEFERRED.
        self.on_deferred: Callable[[float, int, str], None] = lambda due, seq, qid: None

    # -- timing ------------------------------------------------------------

    def retry_delay(self, attempt: int) -> float:
        """Seconds before the attempt after ``attempt``: the schedule, last entry repeating,
        spread by ``retry_jitter`` so that a destination that comes back is not hit by
        every waiting message in the same second."""
        schedule = self.cfg.queue.retry_schedule
        base = schedule[min(max(attempt, 1), len(schedule)) - 1]
        jitter = self.cfg.queue.retry_jitter
        return max(0.0, base * (1 + random.uniform(-jitter, jitter)))

    def expires_at(self, st: MessageState) -> float:
        lifetime = self.cfg.queue.bounce_lifetime if st.is_bounce else self.cfg.queue.lifetime
        return st.received_at + lifetime

    # -- jobs --------------------------------------------------------------

    def job(self, st: MessageState, key: str, d: DestState) -> DeliveryJob:
        return DeliveryJob(
            id=st.id,
            dest=key,
            route=d.route,
            domain=d.domain,
            sender=st.sender,
            recipients=list(d.recipients),
            msg_seq=st.msg_seq,
            body_object=st.body_object,
            attempt=d.attempt,
            smtputf8=st.smtputf8,
            body_8bit=st.body_8bit,
            dsn_ret=st.dsn_ret,
            dsn_envid=st.dsn_envid,
            dsn_notify={r: st.dsn_notify[r] for r in d.recipients if r in st.dsn_notify},
            dsn_orcpt={r: st.dsn_orcpt[r] for r in d.recipients if r in st.dsn_orcpt},
            priority=st.priority,
        )

    async def send(self, st: MessageState, key: str, d: DestState, trace: dict[str, str]) -> None:
        """Hand the destination's pending recipients to the delivery workers."""
        headers = {**trace, "Nats-Msg-Id": job_msg_id(st.id, key, d.attempt)}
        await self.js.publish(
            delivery_subject(st.id, self.priorities.class_of(st.priority)),
            self.job(st, key, d).encode(),
            headers=headers,
        )

    async def defer(
        self, st: MessageState, key: str, d: DestState, due: float, trace: dict[str, str]
    ) -> int:
        """Park the job for ``d.attempt`` in ELEMTA_DEFERRED until ``due``; returns its seq."""
        headers = {
            **trace,
            "Nats-Msg-Id": job_msg_id(st.id, key, d.attempt),
            DUE_HEADER: f"{due:.3f}",
        }
        ack = await self.js.publish(
            f"{DEFERRED_SUBJECT}.{st.id}", self.job(st, key, d).encode(), headers=headers
        )
        self.on_deferred(due, ack.seq, st.id)
        return int(ack.seq)

    # -- giving up and finishing -------------------------------------------

    async def give_up(self, st: MessageState, failures: list[Failure]) -> None:
        """Mark recipients final, record why, and send one DSN for all of them
        (those whose sender asked for it: see :mod:`.notices`)."""
        if not failures:
            return
        bounce_id = await self.bouncer.bounce(st, failures_to_notify(st, failures))
        dropped = st.is_bounce or not st.sender  # the bouncer recorded "failed" events
        for f in failures:
            st.final[f.recipient] = (
                Status.EXPIRED if f.expired else Status.FAILED if dropped else Status.BOUNCED
            )
            if dropped and not f.expired:
                continue
            await self.events.emit(
                st.id,
                Status.EXPIRED if f.expired else Status.BOUNCED,
                recipient=f.recipient,
                status=f.status,
                code=f.code,
                text=f.text,
                host=f.host,
                dsn=bounce_id,
            )

    async def keep(self, st: MessageState) -> int:
        """Copy the stored message to ``elemta.kept.<id>`` and point ``st`` at the copy,
        before its state is first saved.

        The first-attempt copy (``elemta.msg.<id>``) is removed in bulk with every
        other message whose first attempt is over (:mod:`.reclaim`); mail that waits
        for a retry, for hours or days, would hold that back, so the queue works
        from a copy on a subject of its own, deleted when the message is finished.
        A report handed over again within the stream's duplicate window gets the
        same copy (``Nats-Msg-Id: kept.<id>``). Returns the sequence of the
        first-attempt copy (0 when none was made), for :meth:`drop_first_copy` once
        the state that names the new copy is saved."""
        wait = self.cfg.nats.publish_timeout
        try:
            raw = await self.js.get_msg(MESSAGES_STREAM, seq=st.msg_seq)
        except NotFoundError:  # finished meanwhile: its jobs will find it gone
            log.warning("stored message (seq %d) is gone; not copied", st.msg_seq)
            return 0
        if raw.subject == kept_subject(st.id) or raw.subject not in stored_subjects(st.id):
            return 0  # a copy already (a stray handed over again), or not this message
        headers = {k: v for k, v in (raw.headers or {}).items() if not k.startswith("Nats-")}
        headers["Nats-Msg-Id"] = f"kept.{st.id}"
        ack = await self.js.publish(
            kept_subject(st.id),
            raw.data or b"",
            timeout=wait,
            stream=MESSAGES_STREAM,
            headers=headers,
        )
        first, st.msg_seq = st.msg_seq, ack.seq
        return first

    async def drop_first_copy(self, seq: int) -> None:
        """Delete the first-attempt copy of a message the queue now works from a kept
        copy of, so the stream holds each queued message once; left to the bulk
        removal (:mod:`.reclaim`) when the delete does not go through."""
        if not seq:
            return
        try:
            await delete_stream_msg(self.nc, MESSAGES_STREAM, seq, self.cfg.nats.publish_timeout)
        except Exception as exc:
            log.info("first-attempt copy (seq %d) left for the bulk removal: %r", seq, exc)

    async def commit(self, st: MessageState, revision: int) -> None:
        """Save the state, or finish the message when every recipient is final."""
        if st.is_final():
            await self.finish(st)
        else:
            await self.store.save(st, revision)

    async def finish(
        self, st: MessageState, event: str = "done", stored_state: bool = True
    ) -> None:
        """Remove every trace of the message from the queue: body, blob, state
        (``stored_state``: there is a KV record to remove). ``event``: the history
        record of the end ("" for none)."""
        await delete_stream_msg(self.nc, MESSAGES_STREAM, st.msg_seq, self.cfg.nats.publish_timeout)
        if st.body_object and self.objects is not None:
            try:
                await self.objects.delete(st.body_object)
            except Exception as exc:  # already gone, or never written
                log.debug("body object %s not deleted: %s", st.body_object, exc)
        if stored_state:
            await self.store.remove(st.id)
        await self._keep_if_failed(st, event)
        counts: dict[str, int] = {}
        for status in st.final.values():
            counts[status] = counts.get(status, 0) + 1
        if event:
            await self.events.emit(st.id, event, **counts)
        log.info("removed", extra={"result": event or "withdrawn", **counts})

    async def _keep_if_failed(self, st: MessageState, event: str) -> None:
        """Keep the last state of a message that failed (``failed`` in listings)."""
        if self.failed is None or event != "done":
            return
        if not any(v != Status.DELIVERED for v in st.final.values()):
            return
        st.status = "failed"
        try:
            await self.failed.put(st.id, st.encode())
        except Exception as exc:  # only visibility is lost
            log.warning("failed message not kept for listing: %r", exc)

    async def delete_deferred(self, stream: str, seq: int) -> None:
        await delete_stream_msg(self.nc, stream, seq, self.cfg.nats.publish_timeout)
