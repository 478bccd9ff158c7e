"""Per-client limits at connect, in the spirit of Postfix's anvil, held for every
ingress replica in the JetStream KV bucket ``ELEMTA_CLIENT_LIMITS``.

A client is its address (the one a PROXY header named, if any); IPv6 clients
count by /64, since one host may hold a whole /64. Keys are hashed (KV keys
allow no ``:``).

* Open connections (``ingress.client_connection_limit``): one key per client,
  ``conn.<hash>``, holding ``{process: [count, heartbeat]}``, changed with
  optimistic concurrency. Each process refreshes the heartbeat of the clients it
  has open every ``HEARTBEAT`` seconds; counts of a process whose heartbeat is
  older than ``STALE`` (it crashed) are not counted, so a crash frees its slots.
* Rates (connections, MAIL FROMs, RCPT TOs per minute): fixed one-minute
  windows, ``<kind>.<window>.<hash>``, as policy's rate limiter counts.

Replies (``docs/decisions.md``, "Per-client limits"): too many open connections or
new connections per minute: ``421 4.7.0`` at connect, before the greeting; too
many messages or recipients per minute: ``450 4.7.1`` at MAIL or RCPT. Clients in
``server.trusted_networks`` are exempt unless ``client_limits_exempt_trusted`` is
off. When the KV cannot be reached the client is let in (logged): a limit is a
brake against abuse, and failing closed would turn a KV outage into an outage of
all inbound mail.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import json
import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from elemta.common.config import IngressSettings
from elemta.common.jetstream import open_bucket
from elemta.common.names import CLIENT_LIMITS_BUCKET
from elemta.common.networks import Networks

__all__ = ["ClientLimits", "client_key"]

log = logging.getLogger(__name__)

WINDOW = 60.0
HEARTBEAT = 20.0
STALE = 3 * HEARTBEAT
MAX_ATTEMPTS = 20
TIMEOUT = 2.0


def client_key(ip: str) -> str:
    """The client an address counts as: itself, or its /64 for IPv6."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return str(addr.ipv4_mapped)
        return str(ipaddress.ip_network(f"{addr}/64", strict=False))
    return str(addr)


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:32]


class ClientLimits:
    def __init__(
        self,
        settings: IngressSettings,
        trusted: list[str],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.s = settings
        self.exempt = Networks(trusted) if settings.client_limits_exempt_trusted else Networks([])
        self.clock = clock
        self.kv: KeyValue | None = None
        self.process = uuid.uuid4().hex[:12]
        self.open: Counter[str] = Counter()  # hashed client -> our open connections
        self._unsynced: set[str] = set()  # keys whose count in KV may be wrong
        self._tasks: set[asyncio.Task[Any]] = set()
        self._heartbeat: asyncio.Task[None] | None = None

    @property
    def active(self) -> bool:
        s = self.s
        return bool(
            s.client_connection_limit
            or s.client_connection_rate
            or s.client_message_rate
            or s.client_recipient_rate
        )

    async def attach(self, js: JetStreamContext) -> None:
        if not self.active:
            return
        self.kv = await open_bucket(js, CLIENT_LIMITS_BUCKET, 3600.0)
        self._heartbeat = asyncio.get_running_loop().create_task(self._beat())

    async def close(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def applies(self, ip: str) -> bool:
        return self.kv is not None and bool(ip) and ip not in self.exempt

    # -- connections ---------------------------------------------------------------

    async def connect(self, ip: str) -> str | None:
        """Count a new connection; the 421 refusing it, or None. A connection let in
        must be given back with :meth:`disconnect`."""
        if not self.applies(ip):
            return None
        client = client_key(ip)
        try:
            if self.s.client_connection_rate and not await self._take(
                "rate-conn", client, self.s.client_connection_rate
            ):
                log.info("client limit: connection rate of %s exceeded", client)
                return f"421 4.7.0 Error: too many connections from {ip} per minute, slow down"
            if self.s.client_connection_limit and not await self._open(client):
                log.info("client limit: open connections of %s at the limit", client)
                return f"421 4.7.0 Error: too many connections from {ip}"
        except Exception as exc:  # fail open: see the module docstring
            log.warning("client limits unavailable, letting %s in: %r", ip, exc)
        return None

    def disconnect(self, ip: str) -> None:
        if not self.applies(ip):  # nothing was counted at connect
            return
        client = client_key(ip)
        key = _hash(client)
        if not self.open.get(key):
            return
        self.open[key] -= 1
        task = asyncio.get_running_loop().create_task(self._close(key))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _open(self, client: str) -> bool:
        """Take a slot: our count goes up first (so concurrent opens see each
        other), then is written unless the live total is over the limit. When the
        write fails the slot stays taken here (the client is let in, and gives it
        back when it leaves); the heartbeat writes the true count later."""
        key = _hash(client)
        self.open[key] += 1
        try:
            ok = await self._write(key, self.s.client_connection_limit)
        except BaseException:
            self._unsynced.add(key)
            raise
        if not ok:
            self.open[key] -= 1
        return ok

    async def _close(self, key: str) -> None:
        try:
            await asyncio.wait_for(self._write(key, 0), TIMEOUT)
        except Exception as exc:
            self._unsynced.add(key)  # the heartbeat writes it
            log.warning("cannot give back a connection slot yet: %r", exc)

    async def _write(self, key: str, limit: int) -> bool:
        """Write our count of ``conn.<key>`` (what :attr:`open` holds when the write
        happens: the count is ours, so a lost write is healed by the next one);
        with ``limit``, refuse (False) when the live total would be over it."""
        assert self.kv is not None
        name = f"conn.{key}"
        for _ in range(MAX_ATTEMPTS):
            try:
                entry = await asyncio.wait_for(self.kv.get(name), TIMEOUT)
                counts, revision = json.loads(entry.value or b"{}"), entry.revision
            except KeyNotFoundError:
                counts, revision = {}, None
            now = self.clock()
            live = {p: v for p, v in counts.items() if now - v[1] <= STALE and v[0] > 0}
            mine = self.open.get(key, 0)
            others = sum(v[0] for p, v in live.items() if p != self.process)
            if limit and others + mine > limit:
                return False
            if mine > 0:
                live[self.process] = [mine, now]
            else:
                live.pop(self.process, None)
                self.open.pop(key, None)
            payload = json.dumps(live).encode()
            try:
                if revision is None:
                    await asyncio.wait_for(self.kv.create(name, payload), TIMEOUT)
                else:
                    await asyncio.wait_for(self.kv.update(name, payload, last=revision), TIMEOUT)
            except KeyWrongLastSequenceError:
                continue
            self._unsynced.discard(key)
            return True
        raise RuntimeError(f"{name} kept changing")

    async def _beat(self) -> None:
        """Keep our counts alive (a crashed process's counts age out) and write
        those whose last write failed."""
        while True:
            await asyncio.sleep(HEARTBEAT)
            for key in {k for k, n in self.open.items() if n > 0} | self._unsynced:
                try:
                    await self._write(key, 0)
                except Exception as exc:
                    log.warning("client limits heartbeat failed: %r", exc)

    # -- rates -----------------------------------------------------------------------

    async def message(self, ip: str) -> str | None:
        """Count a MAIL FROM; the 450 refusing it, or None."""
        return await self._rate(
            ip, "rate-mail", self.s.client_message_rate, f"too many messages from {ip}"
        )

    async def recipient(self, ip: str) -> str | None:
        """Count a RCPT TO; the 450 refusing it, or None."""
        return await self._rate(
            ip, "rate-rcpt", self.s.client_recipient_rate, f"too many recipients from {ip}"
        )

    async def _rate(self, ip: str, kind: str, limit: int, why: str) -> str | None:
        if not limit or not self.applies(ip):
            return None
        try:
            if await self._take(kind, client_key(ip), limit):
                return None
        except Exception as exc:
            log.warning("client limits unavailable, letting %s on: %r", ip, exc)
            return None
        log.info("client limit: %s", why)
        return f"450 4.7.1 Error: {why} per minute, slow down"

    async def _take(self, kind: str, client: str, limit: int) -> bool:
        assert self.kv is not None
        name = f"{kind}.{int(self.clock() // WINDOW)}.{_hash(client)}"
        for _ in range(MAX_ATTEMPTS):
            try:
                entry = await asyncio.wait_for(self.kv.get(name), TIMEOUT)
            except KeyNotFoundError:
                try:
                    await asyncio.wait_for(self.kv.create(name, b"1"), TIMEOUT)
                except KeyWrongLastSequenceError:
                    continue
                return True
            used = int(entry.value or b"0")
            if used >= limit:
                return False
            try:
                await asyncio.wait_for(
                    self.kv.update(name, str(used + 1).encode(), last=entry.revision), TIMEOUT
                )
            except KeyWrongLastSequenceError:
                continue
            return True
        raise RuntimeError(f"{name} kept changing")
