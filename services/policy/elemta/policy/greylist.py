"""Greylisting at RCPT: a first attempt from an unknown triplet is told to retry.

The triplet is (client network, MAIL FROM, RCPT TO): the network is the client's
/24 for IPv4 and /64 for IPv6, because large senders retry from another host of
the same pool. The null sender is greylisted too, as Postgrey does. Clients in
``trusted_networks`` are never greylisted.

For each triplet the state lives in the JetStream KV bucket ``ELEMTA_GREYLIST``
under a hash of the triplet, so that every policy replica sees the same state:

* first seen: record the time, answer ``451 4.7.1``;
* seen again before ``delay``: ``451 4.7.1`` again;
* seen again after ``delay``, within ``retry_window`` of the first attempt:
  accept and mark the triplet passed; a triplet that never retried in time
  starts over;
* passed: accept at once, for ``pass_ttl`` after the last accepted attempt.

The first write uses KV ``create``; when another replica created the key first
the check reads its record and goes on from there (a race costs nothing).

Errors from NATS (timeouts, no connection, a missing bucket) accept the mail
and are logged: greylisting is a spam heuristic, and failing closed would turn
a KV hiccup into a delay of every inbound message by a whole retry cycle of the
sender (often 15 minutes to an hour), while failing open only lets some spam
through for the length of the outage.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import json
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from elemta.common.names import GREYLIST_BUCKET
from elemta.common.networks import Networks

from .checks import TEMPFAIL, Verdict
from .kvstate import open_bucket

__all__ = ["GREYLIST_BUCKET", "Greylist", "open_greylist_bucket", "triplet_key"]

log = logging.getLogger(__name__)


async def open_greylist_bucket(
    js: JetStreamContext, ttl: float = 36 * 86400.0, bucket: str = GREYLIST_BUCKET
) -> KeyValue:
    """The greylist bucket, created with ``ttl`` (the longest a record must live)."""
    return await open_bucket(js, bucket, ttl)


def client_network(ip: str) -> str:
    """The /24 (IPv4) or /64 (IPv6) of ``ip``; the text itself when it is no address."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    prefix = 24 if addr.version == 4 else 64
    return str(ipaddress.ip_network(f"{addr}/{prefix}", strict=False))


def triplet_key(ip: str, sender: str, recipient: str) -> str:
    """KV key of a triplet: a hash, since KV keys allow only ``[-/_=.a-zA-Z0-9]``."""
    text = "\0".join((client_network(ip), sender.strip().lower(), recipient.strip().lower()))
    return "t." + hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:40]


class Greylist:
    def __init__(
        self,
        kv: KeyValue,
        delay: float = 300.0,
        retry_window: float = 4 * 3600.0,
        pass_ttl: float = 36 * 86400.0,
        trusted_networks: Iterable[str] = ("127.0.0.0/8", "::1/128"),
        timeout: float = 2.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.kv = kv
        self.delay = delay
        self.retry_window = retry_window
        self.pass_ttl = pass_ttl
        self.trusted = Networks(trusted_networks)
        self.timeout = timeout
        self.clock = clock
        # A passed record is rewritten (to extend its life) at most this often.
        self.refresh = min(86400.0, pass_ttl / 10)

    async def rcpt(self, session: dict[str, Any], sender: str, recipient: str) -> Verdict | None:
        ip = str(session.get("client_ip", ""))
        if ip in self.trusted:
            return None
        key = triplet_key(ip, sender, recipient)
        try:
            wait = await asyncio.wait_for(self._check(key), self.timeout)
        except Exception as exc:  # fail open: see the module docstring
            log.warning("greylist unavailable, accepting %s -> %s: %r", sender, recipient, exc)
            return None
        if wait is None:
            return None
        return Verdict(
            action=TEMPFAIL,
            code=451,
            enhanced="4.7.1",
            reason=f"Greylisted, try again in {max(1, round(wait))} seconds",
        )

    async def _check(self, key: str) -> float | None:
        """Seconds the client must still wait, or None to accept."""
        for _ in range(5):
            now = self.clock()
            try:
                entry = await self.kv.get(key)
            except KeyNotFoundError:
                try:
                    await self.kv.create(key, _dump({"first": now}))
                except KeyWrongLastSequenceError:
                    continue  # another replica created it: read theirs
                return self.delay
            record = _load(entry.value)
            revision = entry.revision
            if record is None:  # unreadable: start over
                record = {}
            passed = record.get("passed")
            if passed is not None:
                if now - passed <= self.pass_ttl:
                    if now - passed >= self.refresh:
                        await self._write(key, {"passed": now}, revision)
                    return None
                record = {}
            first = record.get("first")
            if first is None or now - first > self.retry_window or now < first:
                # Never retried in time (or expired): a new first attempt.
                if not await self._write(key, {"first": now}, revision):
                    continue
                return self.delay
            if now - first < self.delay:
                return self.delay - (now - first)
            await self._write(key, {"passed": now}, revision)
            return None
        raise RuntimeError("greylist record kept changing")

    async def _write(self, key: str, record: dict[str, float], revision: int | None) -> bool:
        """Update against ``revision``; False when another replica wrote first."""
        try:
            await self.kv.update(key, _dump(record), last=revision)
        except KeyWrongLastSequenceError:
            return False
        return True


def _dump(record: dict[str, float]) -> bytes:
    return json.dumps(record).encode()


def _load(value: bytes | None) -> dict[str, float] | None:
    try:
        data = json.loads(value or b"")
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    return {k: float(v) for k, v in data.items() if isinstance(v, (int, float))}
