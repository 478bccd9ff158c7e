"""Test support: the queue service in-process, and stand-ins for its peers.

:class:`QueueHarness` plays ingress (stores messages the way ingress does) and a
delivery worker (takes jobs from the ``delivery`` consumer and reports outcomes),
and reads the streams to check what the queue did.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import nats
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import KeyNotFoundError

from elemta.common.config import Config
from elemta.common.envelope import (
    DeliveryJob,
    Envelope,
    FirstAttempt,
    Outcome,
    RecipientResult,
    new_queue_id,
)
from elemta.common.jetstream import (
    BODIES_BUCKET,
    DEFERRED_STREAM,
    DELIVERY_CONSUMER,
    DELIVERY_STREAM,
    ENVELOPE_HEADER,
    EVENTS_STREAM,
    FIRST_CONSUMER,
    MESSAGES_STREAM,
    STATE_BUCKET,
)
from elemta.queue.service import QueueService

from support.natsserver import NatsServer

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


def make_config(nats_url: str, **queue: Any) -> Config:
    return Config.model_validate(
        {
            "server": {"hostname": "mx.queue.test", "local_domains": ["local.test"]},
            "nats": {"url": nats_url, "publish_timeout": 3.0},
            "queue": {
                "http_listen": "127.0.0.1:0",
                "retry_schedule": [0.3, 0.3],
                "retry_jitter": 0.0,
                "lifetime": 300.0,
                "scheduler_interval": 0.05,
                **queue,
            },
            "transport": {"routes": {"relayed.test": "smtp:[relay.test]:2525"}},
        }
    )


def message(subject: str = "Hello", sender: str = "alice@sender.test") -> bytes:
    return (
        f"From: {sender}\r\nTo: bob@a.test\r\nSubject: {subject}\r\n"
        f"Message-ID: <{time.time()}@sender.test>\r\n\r\nHi Bob,\r\nlunch?\r\n"
    ).encode()


async def eventually(
    check: Callable[[], Awaitable[Any]], within: float = 5.0, interval: float = 0.05
) -> Any:
    """Poll ``check`` until it returns something truthy; return that."""
    deadline = time.monotonic() + within
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within}s")
        await asyncio.sleep(interval)


class QueueHarness:
    def __init__(self, server: NatsServer) -> None:
        self.server = server
        self.services: list[QueueService] = []
        self.nc: NATS | None = None
        self._jobs: JetStreamContext.PullSubscription | None = None
        self._first: asyncio.Task[None] | None = None
        self._closing = False
        # ids of stored messages whose first attempt a test reports itself
        self.manual: set[str] = set()
        self._pause_first = False  # first attempts not played (messages left pending)
        self._first_idle = asyncio.Event()  # set while the player is paused
        self.first_seqs: dict[str, int] = {}  # queue id -> where it was first stored

    @property
    def js(self) -> JetStreamContext:
        assert self.nc is not None
        return self.nc.jetstream(timeout=5)

    async def start_queue(
        self, clock: Callable[[], float] = time.time, **queue: Any
    ) -> QueueService:
        svc = QueueService(make_config(self.server.url, **queue), clock=clock)
        await svc.start()
        self.services.append(svc)
        if self.nc is None:
            self.nc = await nats.connect(self.server.url)
        if self._first is None:
            self._first = asyncio.create_task(self._play_first_attempts())
        return svc

    async def _play_first_attempts(self) -> None:
        """Play delivery's first attempt of every stored message (those a test wrote
        and those the queue wrote, bounces): hand it to the queue untried, so that
        the queue plans first-attempt jobs for the test to take."""
        sub = await self.js.pull_subscribe_bind(FIRST_CONSUMER, stream=MESSAGES_STREAM)
        while not self._closing:
            if self._pause_first:
                self._first_idle.set()
                await asyncio.sleep(0.02)
                continue
            self._first_idle.clear()
            try:
                msgs = await sub.fetch(16, timeout=0.2)
            except Exception:  # none yet, the consumer gone meanwhile, NATS away
                await asyncio.sleep(0.05)
                continue
            for m in msgs:
                env = Envelope.from_header((m.headers or {})[ENVELOPE_HEADER])
                self.first_seqs.setdefault(env.id, m.metadata.sequence.stream)
                if env.id not in self.manual:
                    await self.hand_over(env, m.metadata.sequence.stream, headers=m.headers)
                await m.ack()

    async def pause_first_attempts(self) -> None:
        """Stop playing first attempts: messages stored from now on stay unoffered,
        as with every delivery process down."""
        self._pause_first = True
        await self._first_idle.wait()

    async def stop_queue(self, svc: QueueService) -> None:
        await svc.stop()
        self.services.remove(svc)

    async def close(self) -> None:
        self._closing = True
        if self._first is not None:
            self._first.cancel()
            await asyncio.wait({self._first}, timeout=5)
        for svc in list(self.services):
            await svc.stop()
        if self.nc is not None:
            await self.nc.close()

    # -- playing ingress ---------------------------------------------------

    async def store(
        self,
        recipients: list[str],
        sender: str = "alice@sender.test",
        body: bytes | None = None,
        *,
        hold: bool = False,
        is_bounce: bool = False,
        body_object: bool = False,
        manual: bool = False,
        **envelope: Any,
    ) -> tuple[Envelope, int]:
        """Store a message exactly as ingress does; returns the envelope and its seq.
        Its first attempt is handed to the queue untried (see ``_play_first_attempts``)
        unless ``manual``."""
        qid = new_queue_id()
        data = message(sender=sender or "MAILER-DAEMON@x.test") if body is None else body
        env = Envelope(
            id=qid,
            sender=sender,
            recipients=recipients,
            received_at=time.time(),
            client_ip="192.0.2.1",
            client_helo="client.test",
            size=len(data),
            hold=hold,
            is_bounce=is_bounce,
            **envelope,
        )
        if body_object:
            objects = await self.js.object_store(BODIES_BUCKET)
            await objects.put(qid, data)
            env.body_object = qid
            data = b""
        headers = {
            ENVELOPE_HEADER: env.to_header(),
            "traceparent": TRACEPARENT,
            "Nats-Msg-Id": qid,
        }
        if manual:
            self.manual.add(qid)
        ack = await self.js.publish(f"elemta.msg.{qid}", data, headers=headers)
        self.first_seqs[qid] = ack.seq
        return env, ack.seq

    async def hand_over(
        self,
        env: Envelope,
        seq: int,
        outcomes: list[Outcome] | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        """Report a first attempt as delivery does (``outcomes``; none: untried)."""
        report = FirstAttempt(envelope=env, msg_seq=seq, outcomes=outcomes or [], **extra)
        trace = {k: v for k, v in (headers or {}).items() if k == "traceparent"}
        await self.js.publish(
            f"elemta.outcome.{env.id}",
            report.encode(),
            headers={**trace, "Nats-Msg-Id": f"first.{env.id}.{seq}"},
        )

    # -- playing a delivery worker -----------------------------------------

    async def take_jobs(
        self, count: int, within: float = 5.0
    ) -> list[tuple[DeliveryJob, dict[str, str]]]:
        """Take ``count`` jobs from the ``delivery`` consumer (acked); fail if fewer come."""
        if self._jobs is None:
            self._jobs = await self.js.pull_subscribe_bind(
                DELIVERY_CONSUMER, stream=DELIVERY_STREAM
            )
        out: list[tuple[DeliveryJob, dict[str, str]]] = []
        deadline = time.monotonic() + within
        while len(out) < count:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"expected {count} job(s), got {len(out)}")
            try:
                msgs = await self._jobs.fetch(count - len(out), timeout=min(left, 1.0))
            except TimeoutError:
                continue
            for m in msgs:
                await m.ack()
                out.append((DeliveryJob.decode(m.data), dict(m.headers or {})))
        return out

    async def no_more_jobs(self, wait: float = 0.5) -> bool:
        if self._jobs is None:
            self._jobs = await self.js.pull_subscribe_bind(
                DELIVERY_CONSUMER, stream=DELIVERY_STREAM
            )
        try:
            msgs = await self._jobs.fetch(1, timeout=wait)
        except TimeoutError:
            return True
        raise AssertionError(f"unexpected job: {msgs[0].data!r}")

    async def report(
        self,
        job: DeliveryJob,
        status: str,
        code: int = 250,
        text: str = "2.0.0 Ok",
        enhanced: str = "",
        only: list[str] | None = None,
        host: str = "mx1.a.test",
        dsn_passed: bool = False,
    ) -> Outcome:
        """Report an attempt of ``job``: ``status`` for ``only`` (default: all), others delivered."""
        results = [
            RecipientResult(r, status, code, enhanced, text, dsn_passed)
            if only is None or r in only
            else RecipientResult(r, "delivered", 250, "2.0.0", "Ok", dsn_passed)
            for r in job.recipients
        ]
        outcome = Outcome(
            id=job.id,
            dest=job.dest,
            domain=job.domain,
            attempt=job.attempt,
            host=host,
            results=results,
            worker="test",
            finished_at=time.time(),
        )
        await self.js.publish(f"elemta.outcome.{job.id}", outcome.encode())
        return outcome

    # -- looking ---------------------------------------------------------------

    async def count(self, stream: str) -> int:
        info = await self.js.stream_info(stream)
        return int(info.state.messages)

    async def state(self, qid: str) -> dict[str, Any] | None:
        kv = await self.js.key_value(STATE_BUCKET)
        try:
            entry = await kv.get(qid)
        except KeyNotFoundError:
            return None
        return json.loads(entry.value) if entry.value else None

    async def events(self, qid: str) -> list[dict[str, Any]]:
        info = await self.js.stream_info(EVENTS_STREAM)
        if not info.state.messages:
            return []
        sub = await self.js.pull_subscribe(
            f"elemta.events.{qid}",
            stream=EVENTS_STREAM,
            config=ConsumerConfig(
                ack_policy=AckPolicy.NONE,
                deliver_policy=DeliverPolicy.ALL,
                inactive_threshold=5.0,
            ),
        )
        out: list[dict[str, Any]] = []
        try:
            while True:
                try:
                    msgs = await sub.fetch(256, timeout=0.3)
                except TimeoutError:
                    break
                for m in msgs:  # one record may carry the events of one step
                    record = json.loads(m.data)
                    out.extend(record if isinstance(record, list) else [record])
                if msgs[-1].metadata.num_pending == 0:
                    break
        finally:
            await sub.unsubscribe()
        return out

    async def event_types(self, qid: str) -> list[str]:
        return [e["type"] for e in await self.events(qid)]

    async def stored(self, exclude: set[int] | None = None) -> list[tuple[int, Envelope, bytes]]:
        """Every message in ELEMTA_MESSAGES, once each: (seq, envelope, payload), where
        ``seq`` is where it was first stored (a copy the queue keeps on
        ``elemta.kept.<id>`` stands for the message it copied)."""
        info = await self.js.stream_info(MESSAGES_STREAM)
        out = []
        seen: set[str] = set()
        seq = info.state.first_seq
        while info.state.messages and seq <= info.state.last_seq:
            try:
                raw = await self.js.get_msg(MESSAGES_STREAM, seq, direct=True)
            except nats.js.errors.NotFoundError:
                seq += 1
                continue
            env = Envelope.from_header((raw.headers or {})[ENVELOPE_HEADER])
            first = self.first_seqs.get(env.id, seq)
            if (not exclude or first not in exclude) and env.id not in seen:
                seen.add(env.id)
                out.append((first, env, raw.data or b""))
            seq += 1
        return out

    async def kept(self, qid: str) -> tuple[int, bytes]:
        """The copy the queue works from for message ``qid``: (seq, payload)."""
        st = await self.state(qid)
        assert st is not None, f"no state for {qid}"
        raw = await self.js.get_msg(MESSAGES_STREAM, st["msg_seq"])
        assert raw.subject == f"elemta.kept.{qid}"
        return st["msg_seq"], raw.data or b""

    async def deferred_count(self) -> int:
        return await self.count(DEFERRED_STREAM)
