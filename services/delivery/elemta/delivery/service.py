"""Wiring of the delivery service: NATS, resolver, transports, worker; start and stop."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from elemta.common.budget import Budget
from elemta.common.config import Config
from elemta.common.health import HealthServer
from elemta.common.jetstream import (
    DELIVERY_STREAM,
    MESSAGES_STREAM,
    connect,
    disconnect,
    open_bucket,
)
from elemta.common.names import (
    CLAIMS_BUCKET,
    LEADER_ELECTED,
    PRIORITY_CLASSES,
    SHAPING_BUCKET,
    delivery_consumer,
    first_consumer,
)
from elemta.common.pull import PullConsumer
from elemta.common.resolver import Resolver
from elemta.common.routing import Router as RouteTable
from elemta.common.suspensions import Suspensions

from .attempt import AttemptHandler, Router
from .body import BodyStore
from .finish import Finisher
from .first import FirstAttemptHandler
from .journal import EndJournal, take_over
from .metrics import INFLIGHT, TAKEN_OVER
from .mtasts import MAX_AGE_LIMIT, STS_BUCKET, MtaSts, PolicyCache, PolicyFetcher
from .outcome import Reporter, worker_name
from .redelivery import Reported
from .shaping import LEASE_TTL, Shaper
from .tlspolicy import TlsPolicy
from .tlsreport import ReportSender
from .tlsrpt import KEEP_DAYS, TLSRPT_BUCKET, TlsResults
from .unrecorded import Unrecorded

__all__ = ["DeliveryService"]

log = logging.getLogger(__name__)


class DeliveryService:
    """``start()`` returns once connected and pulling in the background; ``stop()`` drains."""

    def __init__(
        self,
        cfg: Config,
        health: HealthServer | None = None,
        stop_event: asyncio.Event | None = None,
        drain_grace: float | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cfg = cfg
        self.clock = clock
        self.health = health
        self.stop_event = stop_event or asyncio.Event()
        # Running attempts get most of delivery.drain_timeout; the rest of it is for
        # handing back what is left and closing connections.
        self.drain_grace = (
            drain_grace if drain_grace is not None else max(1.0, cfg.delivery.drain_timeout - 6.0)
        )
        self.nc: NATS | None = None
        self.js: JetStreamContext | None = None
        self.connected_at = 0.0  # epoch seconds of the latest (re)connection to NATS
        self.router: Router | None = None
        self.mta_sts: MtaSts | None = None
        self.tls_results: TlsResults | None = None
        self.reports: ReportSender | None = None
        self.pullers: list[PullConsumer] = []  # first attempts, then jobs; per class
        self.first: PullConsumer | None = None  # the normal class's of each stream
        self.worker: PullConsumer | None = None
        self.suspensions: Suspensions | None = None
        self.journal: EndJournal | None = None
        if health is not None:
            health.add_check("nats", lambda: self.nc is not None and self.nc.is_connected)
            health.add_check(
                "consumer",
                lambda: bool(self.pullers) and all(w.bound for w in self.pullers),
            )

    async def _watch_leaders(self, reported: Reported) -> None:
        """Tell ``reported`` when a consumer of ours gets a new leader (JetStream's
        advisory, on a cluster): acks the old leader had not passed on come back."""
        assert self.nc is not None
        ours = {MESSAGES_STREAM, DELIVERY_STREAM}

        async def elected(msg: Msg) -> None:
            stream, _, consumer = msg.subject[len(LEADER_ELECTED) + 1 :].partition(".")
            if stream in ours:
                log.info("consumer %s of %s has a new leader: looking up", consumer, stream)
                reported.leader_changed()

        await self.nc.subscribe(f"{LEADER_ELECTED}.>", cb=elected)

    async def start(self) -> None:
        cfg = self.cfg

        reported: Reported | None = None

        def on_state(up: bool) -> None:
            if up:  # a server restarted meanwhile may hand out acked messages again
                self.connected_at = time.time()
            if reported is not None:
                reported.connection_changed(up)

        self.nc = await connect(cfg, "elemta-delivery", on_state, stop=self.stop_event)
        self.js = self.nc.jetstream(timeout=cfg.nats.publish_timeout)
        resolver = Resolver(cfg.dns)
        self.mta_sts = await self._mta_sts(resolver)
        await self._tlsrpt(resolver)
        tls = TlsPolicy(cfg, resolver, self.mta_sts)
        bodies = BodyStore(self.js)
        reporter = Reporter(self.js, cfg.nats.publish_timeout)
        self.suspensions = await Suspensions.open(self.js, self.clock)
        await self.suspensions.start()
        # One for both consumers: an end not stored holds the attempts of either and
        # stops those under way before their end of data; the ends being stored are
        # written down first, and those a process that died left are stored before
        # anything is pulled.
        self.journal = EndJournal.open(Path(cfg.server.state_dir) / "journal")
        unrecorded = Unrecorded(journal=self.journal)
        if self.journal is not None:
            await self._take_over(self.journal, reporter)
        self.router = Router(
            cfg,
            resolver,
            tls,
            self.tls_results,
            await self._shaper(resolver),
            recordable=lambda: (
                self.nc is not None and self.nc.is_connected and not unrecorded.stalled()
            ),
        )
        reported = Reported(
            self.js,
            connected_at=lambda: self.connected_at,
            claims=await open_bucket(self.js, CLAIMS_BUCKET, ttl=cfg.delivery.ack_wait),
            owner=worker_name(),
        )
        reported.connection_changed(True)  # connected above, before it existed
        await self._watch_leaders(reported)
        handler = AttemptHandler(
            bodies,
            self.router,
            reporter,
            suspensions=self.suspensions,
            reported=reported,
            unrecorded=unrecorded,
        )
        first = FirstAttemptHandler(
            RouteTable(cfg),
            bodies,
            self.router,
            reporter,
            suspensions=self.suspensions,
            finisher=Finisher(self.nc, cfg.nats.publish_timeout),
            reported=reported,
            unrecorded=unrecorded,
        )
        classes = await self._classes()
        inflight = [0] * (2 * len(classes))

        def count(i: int) -> Callable[[int], None]:
            def set_(n: int) -> None:
                inflight[i] = n
                INFLIGHT.set(sum(inflight))

            return set_

        # One consumer per class and stream; with more than one class, the classes
        # of a stream share its concurrency through a Budget (elemta.common.budget).
        p = cfg.priorities
        shares = {"high": 0.0, "normal": p.normal_share, "low": p.low_share}
        for stream, name, handle in (
            (MESSAGES_STREAM, first_consumer, first),
            (DELIVERY_STREAM, delivery_consumer, handler),
        ):
            budget = Budget(cfg.delivery.concurrency, classes, shares) if len(classes) > 1 else None
            for klass in classes:
                puller = PullConsumer(
                    self.nc,
                    self.js,
                    stream,
                    name(klass),
                    handle,
                    cfg.delivery.concurrency,
                    cfg.delivery.ack_wait,
                    on_inflight=count(len(self.pullers)),
                    budget=budget,
                    klass=klass,
                )
                puller.start()
                self.pullers.append(puller)
                if klass == "normal" and stream == MESSAGES_STREAM:
                    self.first = puller
                elif klass == "normal":
                    self.worker = puller
        log.info(
            "delivery started: concurrency %d, maildir %s",
            cfg.delivery.concurrency,
            cfg.maildir_root,
        )

    async def _take_over(self, journal: EndJournal, reporter: Reporter) -> None:
        """Store the ends a killed process had written down and not stored."""
        stored = await take_over(journal.directory, reporter.store)
        if stored:
            log.warning(
                "stored %d end(s) of delivered messages left by a process that died; "
                "they are not delivered again",
                stored,
            )
            TAKEN_OVER.inc(stored)

    async def _classes(self) -> list[str]:
        """The priority classes to pull: all with priorities on; else normal only,
        unless consumers of the other classes are left from when they were on
        (their mail is delivered, in order, before they fall idle)."""
        if self.cfg.priorities.enabled:
            return list(PRIORITY_CLASSES)
        assert self.js is not None
        try:
            await self.js.consumer_info(MESSAGES_STREAM, first_consumer("high"))
        except Exception:
            return ["normal"]
        log.info("priorities are off, but their consumers exist: pulling every class")
        return list(PRIORITY_CLASSES)

    async def _mta_sts(self, resolver: Resolver) -> MtaSts | None:
        """MTA-STS with its policy cache in JetStream KV (memory only while NATS fails)."""
        d = self.cfg.delivery
        if not d.mta_sts:
            return None
        assert self.js is not None
        try:
            kv = await open_bucket(self.js, STS_BUCKET, ttl=MAX_AGE_LIMIT)
        except Exception as exc:
            log.warning("MTA-STS policies are cached in this process only: %r", exc)
            kv = None
        fetcher = PolicyFetcher(resolver, d.tls_ca_file, d.mta_sts_fetch_timeout, d.mta_sts_port)
        return MtaSts(resolver, fetcher, PolicyCache(kv), clock=self.clock)

    async def _shaper(self, resolver: Resolver) -> Shaper | None:
        """Traffic shaping, when some destination has a limit (state in KV, shared)."""
        if not self.cfg.shaping.active:
            return None
        assert self.js is not None
        leases = await open_bucket(self.js, SHAPING_BUCKET, ttl=LEASE_TTL)
        return Shaper(
            self.cfg.shaping,
            leases,
            self.suspensions,
            worker_name(),
            clock=self.clock,
            resolver=resolver,
        )

    async def _tlsrpt(self, resolver: Resolver) -> None:
        """Counting of policy results and the daily reports, when ``tlsrpt.enabled``."""
        if not self.cfg.tlsrpt.enabled:
            return
        assert self.js is not None
        try:
            kv = await open_bucket(self.js, TLSRPT_BUCKET, ttl=KEEP_DAYS * 86400)
        except Exception as exc:
            log.error("TLS reporting is off: no bucket %s (%r)", TLSRPT_BUCKET, exc)
            return
        self.tls_results = TlsResults(worker_name(), kv, clock=self.clock)
        self.tls_results.start()
        self.reports = ReportSender(self.cfg, self.js, kv, resolver, clock=self.clock)
        self.reports.start()

    async def stop(self) -> None:
        await asyncio.gather(*(w.stop(self.drain_grace) for w in self.pullers))
        if self.suspensions is not None:
            await self.suspensions.stop()
        if self.router is not None:
            await self.router.close()
        if self.mta_sts is not None:
            await self.mta_sts.close()
        if self.reports is not None:
            await self.reports.stop()
        if self.tls_results is not None:
            await self.tls_results.stop()
        if self.journal is not None:
            self.journal.close()
        if self.nc is not None:
            await disconnect(self.nc, wait=2.0)
