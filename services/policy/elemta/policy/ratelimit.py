"""Rate limits at MAIL FROM: so many transactions per client IP and per sender.

Fixed windows: the count for a window of ``seconds`` lives in the JetStream KV
bucket ``ELEMTA_RATELIMIT`` under ``<kind>.<seconds>.<window number>.<hash>``
(hashed, since KV keys allow neither ``:`` nor ``@``), so every policy replica
counts into the same place. Counters are raised with optimistic concurrency:
``create`` for the first transaction of a window, ``update`` against the read
revision after that, retried on a conflict, so no increment is lost between
replicas. A counter at its limit is not raised further; the transaction gets
``450 4.7.1``. Old windows expire with the bucket's TTL.

The null sender (bounces) has no per-sender limit: all bounces share it.
Clients in ``trusted_networks`` are never limited.

Errors from NATS accept the mail and are logged: a limit is a protection
against abuse, and failing closed would turn a KV outage into an outage of all
inbound mail.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from elemta.common.names import RATELIMIT_BUCKET
from elemta.common.networks import Networks

from .checks import TEMPFAIL, Verdict
from .kvstate import open_bucket

__all__ = ["RATELIMIT_BUCKET", "RateLimiter", "open_ratelimit_bucket"]

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 20  # optimistic retries before giving up (and accepting)

Limit = tuple[int, float]  # (transactions, window seconds)


async def open_ratelimit_bucket(
    js: JetStreamContext, ttl: float = 3600.0, bucket: str = RATELIMIT_BUCKET
) -> KeyValue:
    """The counter bucket; ``ttl`` must be at least the longest window."""
    return await open_bucket(js, bucket, ttl)


class RateLimiter:
    def __init__(
        self,
        kv: KeyValue,
        per_ip: Limit | None = (100, 60.0),
        per_sender: Limit | None = (100, 3600.0),
        trusted_networks: Iterable[str] = ("127.0.0.0/8", "::1/128"),
        timeout: float = 2.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.kv = kv
        self.per_ip = per_ip
        self.per_sender = per_sender
        self.trusted = Networks(trusted_networks)
        self.timeout = timeout
        self.clock = clock

    async def mail(self, session: dict[str, Any], sender: str) -> Verdict | None:
        ip = str(session.get("client_ip", ""))
        if ip in self.trusted:
            return None
        checks: list[tuple[str, str, Limit]] = []
        if self.per_ip is not None and ip:
            checks.append(("ip", ip, self.per_ip))
        if self.per_sender is not None and sender:
            checks.append(("sender", sender.strip().lower(), self.per_sender))
        for kind, subject, limit in checks:
            try:
                allowed = await asyncio.wait_for(self._take(kind, subject, limit), self.timeout)
            except Exception as exc:  # fail open: see the module docstring
                log.warning("rate limiter unavailable, accepting %s %s: %r", kind, subject, exc)
                return None
            if not allowed:
                log.info("rate limit of %s %s exceeded (%d per %gs)", kind, subject, *limit)
                return Verdict(
                    action=TEMPFAIL,
                    code=450,
                    enhanced="4.7.1",
                    reason="Rate limit exceeded, try again later",
                )
        return None

    def key(self, kind: str, subject: str, seconds: float) -> str:
        window = int(self.clock() // seconds)
        digest = hashlib.sha256(subject.encode("utf-8", "surrogateescape")).hexdigest()[:32]
        return f"{kind}.{seconds:g}.{window}.{digest}".replace("+", "")

    async def _take(self, kind: str, subject: str, limit: Limit) -> bool:
        """Count one transaction; False when the window's count is at the limit."""
        count, seconds = limit
        key = self.key(kind, subject, seconds)
        for _ in range(MAX_ATTEMPTS):
            try:
                entry = await self.kv.get(key)
            except KeyNotFoundError:
                if count < 1:
                    return False
                try:
                    await self.kv.create(key, b"1")
                except KeyWrongLastSequenceError:
                    continue  # another replica counted first
                return True
            try:
                used = int(entry.value or b"0")
            except ValueError:
                used = 0
            if used >= count:
                return False
            try:
                await self.kv.update(key, str(used + 1).encode(), last=entry.revision)
            except KeyWrongLastSequenceError:
                continue
            return True
        raise RuntimeError(f"counter {key} kept changing")
