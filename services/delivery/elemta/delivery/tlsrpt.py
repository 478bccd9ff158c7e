"""TLS-RPT (RFC 8460), the counting half: the result of every session held to a policy.

Each session that an MTA-STS policy or DANE TLSA records applied to is counted
once, under its UTC day, its policy domain and its policy (type, strings, MX
host): successful, or failed with a result type (``starttls-not-supported``,
``certificate-host-mismatch``, ``validation-failure`` ...) and the details RFC
8460 4.4 asks for (sending and receiving IP, receiving MX host name, reason).
MTA-STS discovery failures with no cached policy to fall back on
(``sts-policy-fetch-error`` ...) count as failed sessions of policy type
``sts`` with no policy string.

Counting happens in memory, on the delivery path, at the cost of a dictionary
update. Every ``flush_interval`` seconds each delivery process writes its own
counts (cumulative for the day) to the JetStream KV bucket ``ELEMTA_TLSRPT``
under ``r.<YYYYMMDD>.<domain>.<process>``; no two processes write the same
key, so no update is lost. :mod:`.tlsreport` merges the keys of a finished
day into one report per policy domain.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from nats.js.kv import KeyValue

from elemta.common.names import TLSRPT_BUCKET
from elemta.common.tasks import cancel_and_wait

from .tlspolicy import PolicyReport

__all__ = ["DayCounts", "TLSRPT_BUCKET", "TlsResults", "day_of", "merge"]

log = logging.getLogger(__name__)

KEEP_DAYS = 8


def day_of(ts: float) -> str:
    """The UTC day of a time, as used in keys: ``YYYYMMDD``."""
    return time.strftime("%Y%m%d", time.gmtime(ts))


def _key_part(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", text) or "_"


@dataclass
class _Policy:
    """The counts of one policy: successes, and failures by their details."""

    policy: dict[str, Any]
    success: int = 0
    failures: dict[str, int] = field(default_factory=dict)  # JSON of the details -> count


@dataclass
class DayCounts:
    """All policies of one policy domain on one day (one process's, or merged)."""

    policies: dict[str, _Policy] = field(default_factory=dict)  # JSON of the policy -> counts

    def add(self, policy: dict[str, Any], detail: dict[str, Any] | None, n: int = 1) -> None:
        pkey = json.dumps(policy, sort_keys=True)
        entry = self.policies.setdefault(pkey, _Policy(policy))
        if detail is None:
            entry.success += n
        else:
            dkey = json.dumps(detail, sort_keys=True)
            entry.failures[dkey] = entry.failures.get(dkey, 0) + n

    def to_json(self) -> bytes:
        return json.dumps(
            [
                {"policy": p.policy, "success": p.success, "failures": p.failures}
                for p in self.policies.values()
            ],
            sort_keys=True,
        ).encode()

    @classmethod
    def from_json(cls, data: bytes) -> DayCounts:
        out = cls()
        for item in json.loads(data):
            out.add(item["policy"], None, item["success"])
            for dkey, n in item["failures"].items():
                out.add(item["policy"], json.loads(dkey), n)
        return out

    def policy_entries(self) -> list[dict[str, Any]]:
        """The ``policies`` array of an RFC 8460 report."""
        out = []
        for p in self.policies.values():
            details = [
                {**json.loads(dkey), "failed-session-count": n} for dkey, n in p.failures.items()
            ]
            entry: dict[str, Any] = {
                "policy": p.policy,
                "summary": {
                    "total-successful-session-count": p.success,
                    "total-failure-session-count": sum(p.failures.values()),
                },
            }
            if details:
                entry["failure-details"] = details
            out.append(entry)
        return out


def merge(parts: list[DayCounts]) -> DayCounts:
    out = DayCounts()
    for part in parts:
        for p in part.policies.values():
            out.add(p.policy, None, p.success)
            for dkey, n in p.failures.items():
                out.add(p.policy, json.loads(dkey), n)
    return out


def _policy_json(report: PolicyReport) -> dict[str, Any]:
    policy: dict[str, Any] = {"policy-type": report.policy_type, "policy-domain": report.domain}
    if report.strings:
        policy["policy-string"] = list(report.strings)
    if report.mx_host:
        policy["mx-host"] = report.mx_host
    return policy


class TlsResults:
    """The :class:`~.tlspolicy.ResultSink` of a delivery process."""

    def __init__(
        self,
        worker: str,
        kv: KeyValue | None = None,
        clock: Callable[[], float] = time.time,
        flush_interval: float = 30.0,
    ) -> None:
        # A random part, so that a restarted process (pid 1 again, in a container)
        # or a second service in one process never overwrites earlier counts.
        self.worker = f"{_key_part(worker)}_{secrets.token_hex(4)}"
        self.kv = kv
        self.clock = clock
        self.flush_interval = flush_interval
        self.days: dict[tuple[str, str], DayCounts] = {}  # (day, domain) -> counts
        self._dirty: set[tuple[str, str]] = set()
        self._task: asyncio.Task[None] | None = None

    def record(
        self,
        report: PolicyReport,
        result: str,
        host: str,
        addr: str,
        reason: str,
        local: str = "",
    ) -> None:
        key = (day_of(self.clock()), report.domain.lower())
        detail: dict[str, Any] | None = None
        if result:
            detail = {"result-type": result}
            if local:
                detail["sending-mta-ip"] = local
            if addr:
                detail["receiving-ip"] = addr
            if host:
                detail["receiving-mx-hostname"] = host
            if reason:
                detail["failure-reason-code"] = reason[:200]
        self.days.setdefault(key, DayCounts()).add(_policy_json(report), detail)
        self._dirty.add(key)

    def key(self, day: str, domain: str) -> str:
        return f"r.{day}.{domain}.{self.worker}"

    async def flush(self) -> None:
        """Write this process's changed counts to KV; forget days long past."""
        if self.kv is not None:
            for day, domain in sorted(self._dirty):
                counts = self.days[(day, domain)]
                try:
                    await self.kv.put(self.key(day, domain), counts.to_json())
                except Exception as exc:  # kept dirty, tried again next time
                    log.warning("TLS-RPT counts of %s not stored (%r)", domain, exc)
                    continue
                self._dirty.discard((day, domain))
        oldest = day_of(self.clock() - KEEP_DAYS * 86400)
        for key in [k for k in self.days if k[0] < oldest]:
            del self.days[key]
            self._dirty.discard(key)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="tlsrpt-flush")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.flush_interval)
            await self.flush()

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
        await self.flush()
