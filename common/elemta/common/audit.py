"""The audit log: every change made through the API, kept in stream ``ELEMTA_AUDIT``.

One record per change, on ``elemta.audit.<action>`` (``key.create``,
``queue.hold`` ...): who (the key id, its label and role, or the console user),
what (the action, its target, the parameters, how many messages it touched),
when (epoch seconds) and from where (the client address). Records are published
with a JetStream acknowledgement: an action whose record cannot be stored is not
reported as done without it (the API answers 503 and the change stays, which the
next record shows).

The stream is kept for ``api.audit_retention`` seconds (default 365 days) and
read newest first by the API (``GET /api/v1/audit``) and ``elemta audit``.
"""

from __future__ import annotations

import json
import time
from typing import Any

from nats.js import JetStreamContext
from nats.js.api import StorageType, StreamConfig
from nats.js.errors import BadRequestError, NotFoundError

from .jetstream import stream_replicas
from .names import AUDIT_STREAM, AUDIT_SUBJECT

__all__ = ["AuditLog"]

MAX_READ = 1000


class AuditLog:
    def __init__(self, js: JetStreamContext, timeout: float = 5.0) -> None:
        self.js = js
        self.timeout = timeout

    @classmethod
    async def open(cls, js: JetStreamContext, retention: float, wait: float = 5.0) -> AuditLog:
        """Create the stream when it is missing (idempotent; settings of an existing
        stream are kept)."""
        config = StreamConfig(
            name=AUDIT_STREAM,
            subjects=[f"{AUDIT_SUBJECT}.>"],
            storage=StorageType.FILE,
            max_age=retention,
            num_replicas=await stream_replicas(js),
        )
        try:
            await js.stream_info(AUDIT_STREAM)
        except NotFoundError:
            try:
                await js.add_stream(config)
            except BadRequestError:  # created meanwhile
                pass
        return cls(js, wait)

    async def record(
        self,
        actor: dict[str, Any],
        action: str,
        target: str = "",
        remote: str = "",
        now: float | None = None,
        **details: Any,
    ) -> dict[str, Any]:
        entry = {
            "at": round(time.time() if now is None else now, 3),
            "actor": actor,
            "action": action,
            "target": target,
            "remote": remote,
            **details,
        }
        await self.js.publish(
            f"{AUDIT_SUBJECT}.{action}",
            json.dumps(entry, separators=(",", ":")).encode(),
            timeout=self.timeout,
            stream=AUDIT_STREAM,
        )
        return entry

    async def read(self, limit: int = 100, before: int = 0) -> list[dict[str, Any]]:
        """Up to ``limit`` records, newest first, with sequence numbers below ``before``
        (0: from the newest); each record carries its ``seq`` for the next page."""
        limit = max(1, min(limit, MAX_READ))
        info = await self.js.stream_info(AUDIT_STREAM)
        seq = info.state.last_seq if not before else min(before - 1, info.state.last_seq)
        first = info.state.first_seq
        out: list[dict[str, Any]] = []
        while seq >= first and seq > 0 and len(out) < limit:
            try:
                msg = await self.js.get_msg(AUDIT_STREAM, seq=seq)
            except NotFoundError:
                seq -= 1
                continue
            try:
                entry = json.loads(msg.data or b"{}")
            except ValueError:
                entry = {"raw": (msg.data or b"").decode("utf-8", "replace")}
            entry["seq"] = seq
            out.append(entry)
            seq -= 1
        return out
