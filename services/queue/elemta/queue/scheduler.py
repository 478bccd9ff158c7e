"""The retry scheduler: moves parked jobs from ELEMTA_DEFERRED back to delivery.

Jobs waiting for a retry sit in their own stream, ELEMTA_DEFERRED, each with an
``Elemta-Due`` header (epoch seconds). The scheduler keeps only ``(due, seq, id)``
per job in an in-memory heap; the job itself stays in the stream and is read
back when it is due. The stream is the truth: at start-up the heap is rebuilt by
reading the headers of every message in it (an ephemeral, headers-only,
ack-less consumer), so a restart loses nothing.

Every ``queue.scheduler_interval`` seconds the due jobs are, in order: checked
against the message state (a job the state no longer waits for is stale and
dropped), checked against the lifetime (expired: bounce instead), published to
``elemta.delivery.<id>`` with the same ``Nats-Msg-Id`` as the parked copy, and
only then deleted from ELEMTA_DEFERRED — a crash in between re-sends at most a
job JetStream then drops as a duplicate.

The heap is not shared: only the queue process holding the lease
(:mod:`.lease`) runs a scheduler; a standby builds its own when it takes over.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import secrets

from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from elemta.common.envelope import DeliveryJob
from elemta.common.logs import queue_id
from elemta.common.names import (
    DEFERRED_STREAM,
    DEFERRED_SUBJECT,
    DUE_HEADER,
    REBUILD_CONSUMER_PREFIX,
)
from elemta.common.telemetry import context_from_headers, headers_with_context, tracer

from .bounce import Failure
from .dispatch import Dispatcher
from .metrics import DEFERRED
from .state import StateStore

__all__ = ["Scheduler"]

log = logging.getLogger(__name__)

CHUNK = 256  # due jobs moved concurrently
BACKOFF = 5.0  # seconds before a job whose move failed is tried again


class Scheduler:
    def __init__(
        self,
        js: JetStreamContext,
        store: StateStore,
        dispatcher: Dispatcher,
        interval: float,
    ) -> None:
        self.js = js
        self.store = store
        self.dispatcher = dispatcher
        self.interval = interval
        self.tracer = tracer(__name__)
        self._heap: list[tuple[float, int, str]] = []
        self._seqs: set[int] = set()
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        dispatcher.on_deferred = self.add

    def __len__(self) -> int:
        return len(self._seqs)

    def add(self, due: float, seq: int, qid: str) -> None:
        """Track a parked job (seen once, however often it is reported)."""
        if seq in self._seqs:
            return
        self._seqs.add(seq)
        heapq.heappush(self._heap, (due, seq, qid))
        DEFERRED.set(len(self._seqs))

    def owners(self) -> set[str]:
        """The queue ids with a parked job."""
        return {owner for _, _, owner in self._heap}

    def flush(self, qid: str | None = None) -> int:
        """Make every parked job (of one message, or all) due now; returns how many."""
        n = 0
        entries = []
        for due, seq, owner in self._heap:
            if qid is None or owner == qid:
                due, n = 0.0, n + 1
            entries.append((due, seq, owner))
        heapq.heapify(entries)
        self._heap = entries
        if n:
            self._wake.set()
        return n

    async def rebuild(self) -> None:
        """Fill the heap from the stream; called before any new job is parked."""
        info = await self.js.stream_info(DEFERRED_STREAM)
        if not info.state.messages:
            DEFERRED.set(0)
            return
        # A private, ack-less, headers-only consumer: the bodies are not needed here.
        name = f"{REBUILD_CONSUMER_PREFIX}{secrets.token_hex(6)}"
        await self.js.add_consumer(
            DEFERRED_STREAM,
            ConsumerConfig(
                name=name,
                ack_policy=AckPolicy.NONE,
                deliver_policy=DeliverPolicy.ALL,
                filter_subject=f"{DEFERRED_SUBJECT}.>",
                headers_only=True,
                inactive_threshold=30.0,
                mem_storage=True,
            ),
        )
        sub = await self.js.pull_subscribe_bind(name, stream=DEFERRED_STREAM)
        try:
            while True:
                try:
                    msgs = await sub.fetch(1024, timeout=2.0)
                except TimeoutError:
                    break
                for m in msgs:
                    due = float((m.headers or {}).get(DUE_HEADER, "0") or 0)
                    self.add(due, m.metadata.sequence.stream, m.subject.rpartition(".")[2])
                if msgs[-1].metadata.num_pending == 0:
                    break
        finally:
            await sub.unsubscribe()
            try:
                await self.js.delete_consumer(DEFERRED_STREAM, name)
            except Exception as exc:  # it expires on its own after inactive_threshold
                log.debug("rebuild consumer not deleted: %s", exc)
        log.info("scheduler rebuilt: %d deferred job(s)", len(self))

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="queue-scheduler")

    async def stop(self, grace: float = 2.0) -> None:
        """End the loop; a pass still running after ``grace`` seconds (NATS gone,
        every call waiting for its timeout) is cancelled: its jobs stay parked."""
        self._stopping.set()
        self._wake.set()
        if self._task is not None:
            _done, pending = await asyncio.wait({self._task}, timeout=grace)
            for task in pending:
                task.cancel()
                await asyncio.wait({task}, timeout=1.0)

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                await asyncio.wait_for(self._wake.wait(), self.interval)
            except TimeoutError:
                pass
            self._wake.clear()
            if self._stopping.is_set():
                break
            try:
                await self.run_due()
            except Exception:
                log.exception("scheduler pass failed")

    async def run_due(self, now: float | None = None) -> int:
        """Move every job due by ``now``; returns how many were looked at."""
        now = self.dispatcher.clock() if now is None else now
        due: list[tuple[float, int, str]] = []
        while self._heap and self._heap[0][0] <= now:
            entry = heapq.heappop(self._heap)
            self._seqs.discard(entry[1])
            due.append(entry)
        for i in range(0, len(due), CHUNK):
            await asyncio.gather(*(self._move(*e) for e in due[i : i + CHUNK]))
        DEFERRED.set(len(self._seqs))
        return len(due)

    async def _move(self, due: float, seq: int, qid: str) -> None:
        queue_id.set(qid)
        try:
            await self._move_one(seq, qid)
        except Exception as exc:
            log.warning("deferred job %d not moved, trying again later: %s", seq, exc)
            self.add(self.dispatcher.clock() + max(BACKOFF, self.interval), seq, qid)

    async def _move_one(self, seq: int, qid: str) -> None:
        try:
            raw = await self.js.get_msg(DEFERRED_STREAM, seq, direct=True)
        except NotFoundError:
            return  # moved or dropped already
        job = DeliveryJob.decode(raw.data or b"{}")
        async with self.store.lock(job.id):
            loaded = await self.store.load(job.id)
            st, revision = loaded if loaded is not None else (None, 0)
            d = st.dests.get(job.dest) if st is not None else None
            if st is None or d is None or d.status != "deferred" or d.attempt != job.attempt:
                log.info("dropping stale deferred job for %s attempt %d", job.dest, job.attempt)
                await self.dispatcher.delete_deferred(DEFERRED_STREAM, seq)
                return
            ctx = context_from_headers(raw.headers or st.trace)
            with self.tracer.start_as_current_span("queue.schedule", context=ctx) as span:
                span.set_attribute("elemta.queue_id", st.id)
                span.set_attribute("elemta.attempt", d.attempt)
                if self.dispatcher.clock() > self.dispatcher.expires_at(st):
                    last = d.last or {}
                    failures = [
                        Failure(
                            recipient=r,
                            status="4.4.7",
                            code=int(last.get("code") or 0),
                            text=str(last.get("text") or ""),
                            host=str(last.get("host") or ""),
                            expired=True,
                            enhanced=str(last.get("enhanced") or ""),
                        )
                        for r in d.recipients
                    ]
                    d.recipients = []
                    d.status = "done"
                    await self.dispatcher.give_up(st, failures)
                else:
                    d.status = "queued"
                    d.next_attempt = 0.0
                    await self.dispatcher.send(st, job.dest, d, headers_with_context())
                await self.dispatcher.commit(st, revision)
            await self.dispatcher.delete_deferred(DEFERRED_STREAM, seq)
