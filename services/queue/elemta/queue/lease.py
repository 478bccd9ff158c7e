"""The lease that makes one queue process of several the active one.

Two queue processes run for availability; only one may take messages in, handle
outcomes, move deferred jobs and answer operator requests, because the retry
heap lives in memory and two schedulers would move the same jobs. The process
holding the key ``active`` of KV bucket ``ELEMTA_QUEUE_LEASE`` is that one.

The key lives as long as the bucket's TTL: a process that dies stops renewing
it, JetStream removes it, and the next standby that tries creates it again.
Within ``queue.lease_time`` (the promise to operators) the share is:

* TTL of the key: ``0.6 × lease_time`` after the last renewal;
* the holder renews every ``0.2 × lease_time`` with compare-and-set on the
  revision it wrote, so a key that expired and was taken by another is never
  overwritten: the renewal fails and the holder stands down;
* a standby tries to create the key every ``0.1 × lease_time``;
* what is left (at least ``0.3 × lease_time``) is for the new active one to
  rebuild its retry heap from ELEMTA_DEFERRED and start its consumers.

The holder also stands down on its own when it could not renew for
``0.4 × lease_time`` (NATS unreachable): the key may expire ``0.2 × lease_time``
later at the earliest, and the deadline counts from when the last successful
renewal was *sent*, so it stops before anyone else can start. A graceful stop
deletes the key, so the standby takes over at its next try.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable

from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import BadRequestError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from elemta.common.names import LEASE_BUCKET, LEASE_KEY

__all__ = ["Lease", "holder_name"]

log = logging.getLogger(__name__)

TTL_SHARE = 0.6  # of lease_time: how long the key outlives its last renewal
RENEW_SHARE = 0.2  # of lease_time: how often the holder renews
TRY_SHARE = 0.1  # of lease_time: how often a standby tries to take the lease
STALE_SHARE = 0.4  # of lease_time without a renewal: the holder stands down


def holder_name() -> str:
    """Who holds the lease, as operators read it: host, pid and a random part,
    so that a restarted process never mistakes an old lease for its own."""
    return f"{socket.gethostname()}/{os.getpid()}/{secrets.token_hex(3)}"


class Lease:
    """The lease of one queue process: :meth:`acquire`, :meth:`renew`,
    :meth:`release`; :attr:`held` while it believes it holds it."""

    def __init__(
        self,
        js: JetStreamContext,
        lease_time: float,
        replicas: int = 1,
        holder: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.js = js
        self.lease_time = lease_time
        self.replicas = replicas
        self.holder = holder or holder_name()
        self.clock = clock
        self.kv: KeyValue | None = None
        self.revision = 0
        self._renewed_at = 0.0  # clock() when the last successful write was sent

    @property
    def ttl(self) -> float:
        return self.lease_time * TTL_SHARE

    @property
    def renew_every(self) -> float:
        return self.lease_time * RENEW_SHARE

    @property
    def try_every(self) -> float:
        return self.lease_time * TRY_SHARE

    @property
    def held(self) -> bool:
        """Held, as far as this process can know: renewed recently enough."""
        return self.revision > 0 and self.clock() - self._renewed_at < (
            self.lease_time * STALE_SHARE
        )

    async def open(self, patience: float = 60.0) -> None:
        """Create the bucket (the first process), or bind to it; tried again for
        ``patience`` seconds while a JetStream cluster elects its leaders."""
        deadline = time.monotonic() + patience
        while True:
            try:
                self.kv = await self._open()
                return
            except Exception as exc:
                if time.monotonic() > deadline:
                    raise
                log.info("lease bucket not ready yet (%r); trying again", exc)
                await asyncio.sleep(0.5)

    async def _open(self) -> KeyValue:
        try:
            return await self.js.create_key_value(
                KeyValueConfig(
                    bucket=LEASE_BUCKET,
                    history=1,
                    ttl=self.ttl,
                    replicas=self.replicas,
                    storage=StorageType.FILE,
                )
            )
        except BadRequestError:  # there already (perhaps with another lease_time)
            return await self.js.key_value(LEASE_BUCKET)

    async def current(self) -> str:
        """The holder named in the bucket now; empty when nobody holds it."""
        assert self.kv is not None
        try:
            entry = await self.kv.get(LEASE_KEY)
        except KeyNotFoundError:  # also a deleted key
            return ""
        return (entry.value or b"").decode()

    async def acquire(self) -> bool:
        """Take the lease when nobody holds it; True when this process holds it now."""
        assert self.kv is not None
        sent = self.clock()
        try:
            self.revision = await self.kv.create(LEASE_KEY, self.holder.encode())
        except KeyWrongLastSequenceError:
            # Someone holds it; perhaps this very process, which stood down after
            # renewals timed out while its key lived on: take it back.
            try:
                entry = await self.kv.get(LEASE_KEY)
            except KeyNotFoundError:
                return False
            if entry.value != self.holder.encode() or entry.revision is None:
                self.revision = 0
                return False
            self.revision = entry.revision
            return await self.renew()
        self._renewed_at = sent
        return True

    async def renew(self) -> bool:
        """Extend the lease; False when it is no longer this process's (it expired
        and another took it). A NATS error is raised: the caller cannot tell."""
        assert self.kv is not None
        sent = self.clock()
        try:
            self.revision = await self.kv.update(LEASE_KEY, self.holder.encode(), self.revision)
        except KeyWrongLastSequenceError:
            self.revision = 0
            return False
        self._renewed_at = sent
        return True

    async def release(self) -> None:
        """Give the lease up (a graceful stop), so a standby need not wait for its TTL."""
        if self.kv is None or not self.revision:
            return
        revision, self.revision = self.revision, 0
        try:
            await self.kv.delete(LEASE_KEY, last=revision)
        except Exception as exc:  # expired and taken meanwhile, or NATS gone: it expires
            log.info("lease not released (%s); it expires on its own", exc)
