"""Destination suspensions: no delivery attempt to a domain until a time, or until lifted.

KumoMTA's ``suspend``: an administrator stops all traffic to a destination
(a domain that is blacklisting us, a migration on their side) without holding
each message. A suspension is a record in KV ``ELEMTA_SUSPENSIONS`` under the
domain (lower case): ``{"domain", "reason", "until", "created_at",
"created_by"}``; ``until`` is epoch seconds, after which it no longer applies.

The queue service writes the records (asked by the API on
``elemta.queue.suspend`` / ``elemta.queue.unsuspend``); the queue and every
delivery process keep the current set in memory with a KV watch
(:class:`Suspensions`), so checking a job costs a dict lookup:

* the queue parks a job for a suspended domain in ELEMTA_DEFERRED until the
  suspension ends, instead of handing it to delivery; its scheduler checks again
  when the job is due;
* delivery, for a job that was already on its way, makes no connection and
  reports the recipients deferred (``4.4.5`` "destination suspended").

When a suspension is lifted the queue makes the parked jobs of that domain due
at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from nats.js import JetStreamContext
from nats.js.kv import KV_DEL, KV_PURGE, KeyValue

from .jetstream import open_bucket
from .names import SUSPENSIONS_BUCKET
from .records import build
from .tasks import cancel_and_wait

__all__ = ["DOMAIN_PATTERN", "Suspension", "Suspensions"]

log = logging.getLogger(__name__)

# A domain as a KV key can hold it (IDNs in their A-label form). No look-ahead:
# the pattern is also a JSON Schema pattern in the API's document.
DOMAIN_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$"
_DOMAIN = re.compile(DOMAIN_PATTERN)


def valid_domain(domain: str) -> bool:
    return len(domain) <= 253 and bool(_DOMAIN.match(domain))


@dataclass
class Suspension:
    domain: str
    reason: str
    until: float
    created_at: float
    created_by: str = ""

    def active(self, now: float) -> bool:
        return now < self.until

    def encode(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def decode(cls, data: bytes) -> Suspension:
        return build(cls, json.loads(data))


class Suspensions:
    """The suspensions in force, kept current by a watch on the bucket."""

    def __init__(self, kv: KeyValue, clock: Callable[[], float] = time.time) -> None:
        self.kv = kv
        self.clock = clock
        self._by_domain: dict[str, Suspension] = {}
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    @classmethod
    async def open(
        cls, js: JetStreamContext, clock: Callable[[], float] = time.time
    ) -> Suspensions:
        return cls(await open_bucket(js, SUSPENSIONS_BUCKET, ttl=0), clock)

    # -- the watch ---------------------------------------------------------

    async def start(self, wait: float = 5.0) -> None:
        """Start watching; returns once the current records are loaded (or after ``wait``)."""
        self._task = asyncio.create_task(self._watch(), name="suspensions-watch")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ready.wait(), wait)

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)

    async def _watch(self) -> None:
        while True:
            try:
                watcher = await self.kv.watchall()
                async for entry in watcher:
                    if entry is None:
                        self._ready.set()
                        continue
                    self._apply(entry.key, entry.value, entry.operation)
                    if entry.delta == 0:
                        self._ready.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("suspension watch interrupted, starting again: %r", exc)
                await asyncio.sleep(1.0)

    def _apply(self, key: str, value: bytes | None, operation: Any) -> None:
        if operation in (KV_DEL, KV_PURGE) or not value:
            if self._by_domain.pop(key, None) is not None:
                log.info("suspension of %s lifted", key)
            return
        try:
            s = Suspension.decode(value)
        except Exception as exc:
            log.warning("unreadable suspension %s ignored: %s", key, exc)
            return
        self._by_domain[key] = s
        log.info("destination %s suspended until %.0f: %s", key, s.until, s.reason)

    # -- queries -----------------------------------------------------------

    def active(self, domain: str) -> Suspension | None:
        """The suspension in force for ``domain`` now, if any."""
        s = self._by_domain.get(domain.lower().rstrip("."))
        return s if s is not None and s.active(self.clock()) else None

    def all(self) -> list[Suspension]:
        """Every suspension still in force, by domain."""
        now = self.clock()
        return sorted(
            (s for s in self._by_domain.values() if s.active(now)), key=lambda s: s.domain
        )

    # -- changes (the queue service) ----------------------------------------

    async def put(self, s: Suspension) -> None:
        await self.kv.put(s.domain, s.encode())
        self._by_domain[s.domain] = s

    async def remove(self, domain: str) -> bool:
        """Lift a suspension; False when there was none in force."""
        had = self.active(domain) is not None
        await self.kv.purge(domain)
        self._by_domain.pop(domain, None)
        return had
