"""Asking the queue service to change messages and destinations.

The queue owns the state, so the API never writes it: each action is a core NATS
request on ``elemta.queue.<verb>`` (see the queue service's ``control`` module),
answered by whichever queue process is up. No answer in time is ``503``.
"""

from __future__ import annotations

import json
from typing import Any

import nats.errors

from elemta.common.names import CONTROL_SUBJECT

from .backend import Backend, Unavailable

__all__ = ["CHUNK", "QueueControl"]

# Messages per request: each takes a few NATS round trips in the queue, so a
# chunk stays well inside the request timeout.
CHUNK = 200
TIMEOUT = 30.0


class QueueControl:
    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    async def ask(self, verb: str, body: dict[str, Any]) -> dict[str, Any]:
        self.backend.js()  # not ready: 503
        nc = self.backend.nc
        assert nc is not None
        try:
            msg = await nc.request(
                f"{CONTROL_SUBJECT}.{verb}", json.dumps(body).encode(), timeout=TIMEOUT
            )
        except nats.errors.NoRespondersError:
            raise Unavailable("the queue service is not running") from None
        except (TimeoutError, nats.errors.Error) as exc:
            raise Unavailable(f"the queue service did not answer: {exc!r}") from None
        reply = json.loads(msg.data or b"{}")
        if not isinstance(reply, dict):
            raise Unavailable("the queue service answered nonsense")
        return reply

    async def act(self, verb: str, ids: list[str], by: str) -> dict[str, dict[str, Any]]:
        """Per queue id, the queue's answer to ``verb``."""
        results: dict[str, dict[str, Any]] = {}
        for i in range(0, len(ids), CHUNK):
            reply = await self.ask(verb, {"ids": ids[i : i + CHUNK], "by": by})
            if not reply.get("ok"):
                raise Unavailable(f"the queue refused: {reply.get('error')}")
            results.update(reply.get("results") or {})
        return results
