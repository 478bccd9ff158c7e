"""The durable hand-off: a message is ours only once JetStream acknowledged it.

One publish to ``elemta.msg.<id>`` in ``ELEMTA_MESSAGES``: the envelope in the
``Elemta-Envelope`` header, ``Nats-Msg-Id: <id>``, the trace context, and the
message as the payload. A body above ``nats.inline_body_limit`` (or too large for the
server's ``max_payload``) goes to the Object Store ``ELEMTA_BODIES`` first and the envelope names it (``body_object``); when
the envelope publish then fails, the object is deleted, so nothing is left
half-stored.

:meth:`Handoff.store` returns only after the PubAck and raises
:class:`QueueUnavailable` otherwise: not connected, stream missing, refused, or no
PubAck within ``nats.publish_timeout``.

A ``451`` stays a ``451``: the envelope carries a ``deadline`` (the moment ingress
stops waiting for the PubAck), and delivery never delivers a copy stored after it.
When the outcome is unknown at the deadline (a timeout, the connection lost in
flight) ingress asks the stream, for up to ``nats.publish_timeout`` more, whether
the copy is there: stored by the deadline (only its PubAck was lost, e.g. the
server was killed between its fsync and its reply) means the message is ours and
the client reads ``250``. A copy no longer there may have been stored, delivered
and deleted meanwhile (a restarted server delivers it within a second or two):
its history then says ``done`` and the client reads ``250`` too. Anything else —
not there with no such history, stored late, withdrawn, or no answer — is ``451``, and a copy that lands later is never delivered. The withdrawal is
therefore as durable as the message: it is written in the message itself. The
subject is also purged in the background (no disk kept for a dead copy). What
remains: with NATS unreachable for the whole extra wait, a copy stored by the
deadline whose PubAck was lost is delivered although the client read ``451``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.errors import APIError, NoStreamResponseError, NotFoundError
from nats.js.object_store import ObjectStore
from opentelemetry.context import Context

from elemta.common.config import Config
from elemta.common.envelope import Envelope
from elemta.common.history import ended
from elemta.common.jetstream import BODIES_BUCKET, ENVELOPE_HEADER, MESSAGES_STREAM
from elemta.common.names import msg_subject
from elemta.common.priority import Priorities
from elemta.common.puback import header_block, publish_acked
from elemta.common.replies import TemporaryError
from elemta.common.telemetry import headers_with_context

__all__ = ["Handoff", "QueueUnavailable"]

log = logging.getLogger(__name__)

CLEANUP_PERIOD = 120.0  # the streams' duplicate window: how long a late store may land
# The queue deletes a finished message a moment before it writes ``done``: a copy
# found neither stored nor ended is asked after again for this long.
ENDING_WAIT = 1.0
FINISHED_ALREADY = -1  # "stored by its deadline" for a copy finished since (no sequence)
HEADROOM = 64 * 1024  # room for the headers (envelope, trace) within max_payload


class QueueUnavailable(TemporaryError):
    """The message could not be stored (or not confirmed to be) in time."""


class Handoff:
    def __init__(self, cfg: Config, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock  # epoch seconds: the deadline is compared with the server's time
        self.publish_timeout = cfg.nats.publish_timeout
        self.inline_limit = cfg.nats.inline_body_limit
        self.nc: NATS | None = None
        self.js: JetStreamContext | None = None
        self.stream_ready = False
        self._bodies: ObjectStore | None = None
        self._cleanup: set[asyncio.Task[None]] = set()
        self.purged = 0  # subjects purged (twice) after an unconfirmed store
        self.found = 0  # unconfirmed stores found stored by their deadline (answered 250)
        # The class of a message's priority names its subject (elemta.common.names).
        self.klass = Priorities(cfg.priorities).class_of

    def attach(self, nc: NATS) -> None:
        self.nc = nc
        self.js = nc.jetstream(timeout=self.publish_timeout)

    def inline_budget(self) -> int:
        """The largest body sent inline: the configured limit, within the server's max_payload."""
        assert self.nc is not None
        server_max = int(self.nc.max_payload or 0)
        if server_max <= 0:
            return self.inline_limit
        return min(self.inline_limit, server_max - HEADROOM)

    def unavailable(self) -> str:
        """Why a message cannot be stored now, or "" when it can."""
        if self.nc is None or self.js is None or not self.nc.is_connected:
            return "NATS not connected"
        if not self.stream_ready:
            return f"stream {MESSAGES_STREAM} does not exist yet"
        return ""

    async def store(self, env: Envelope, message: bytes, ctx: Context | None = None) -> int:
        """Store ``message`` under ``env``; return the stream sequence after the PubAck."""
        why = self.unavailable()
        if why:
            raise QueueUnavailable(why)
        assert self.js is not None
        payload = message
        if len(message) > self.inline_budget():
            await self._put_body(env.id, message)
            env.body_object = env.id
            payload = b""
        env.deadline = round(self.clock() + self.publish_timeout, 3)
        headers = headers_with_context(
            {
                ENVELOPE_HEADER: env.to_header(),
                "Nats-Msg-Id": env.id,
                "Nats-Expected-Stream": MESSAGES_STREAM,
            },
            ctx,
        )
        subject = msg_subject(env.id, self.klass(env.priority))
        assert self.nc is not None
        try:
            seq = await publish_acked(
                self.nc, subject, payload, header_block(headers), self.publish_timeout
            )
        except (NoStreamResponseError, APIError) as exc:
            # Refused for certain: nothing was stored.
            self._drop_body(env)
            raise QueueUnavailable(f"publish refused: {exc!r}") from None
        except Exception as exc:
            # A timeout or a lost connection: the store may have landed, or land later.
            seq = await self._stored_by(subject, env.deadline)
            if seq:
                self.found += 1
                log.warning("no PubAck (%r), but stored by its deadline as seq %d", exc, seq)
                return seq
            self._drop_body(env)
            self._spawn(self._purge(subject))
            raise QueueUnavailable(f"no PubAck: {exc!r}") from None
        return seq

    async def _stored_by(self, subject: str, deadline: float) -> int:
        """The sequence of the copy on ``subject`` if the stream stored it by
        ``deadline`` (:data:`FINISHED_ALREADY` when it did and the message was
        finished since); 0 when it did not, stored it later, or does not answer
        within ``publish_timeout``."""
        js = self.js
        assert js is not None
        loop = asyncio.get_running_loop()
        give_up = loop.time() + self.publish_timeout
        missing_until = 0.0  # while not found: when "never stored" is concluded
        while True:
            left = give_up - loop.time()
            if left <= 0:
                log.warning("%s: could not learn whether it was stored", subject)
                return 0
            try:
                raw = await asyncio.wait_for(js.get_last_msg(MESSAGES_STREAM, subject), left)
            except NotFoundError:
                qid = subject.rsplit(".", 1)[-1]
                try:
                    end = await asyncio.wait_for(ended(js, qid), max(0.001, left))
                except Exception as exc:
                    log.debug("asking how %s ended: %r", qid, exc)
                    end = ""
                if end == "done":
                    log.warning("%s: stored by its deadline and already delivered", subject)
                    return FINISHED_ALREADY
                if end == "withdrawn":
                    return 0
                now = loop.time()
                missing_until = missing_until or now + ENDING_WAIT
                if now >= missing_until:
                    return 0
                await asyncio.sleep(0.1)
                continue
            except Exception as exc:
                log.debug("asking for %s: %r", subject, exc)
                await asyncio.sleep(min(0.25, max(0.0, give_up - loop.time())))
                continue
            stored_at = raw.time.timestamp() if raw.time else float("inf")
            if stored_at > deadline:
                log.warning("%s stored %.3fs after its deadline", subject, stored_at - deadline)
                return 0
            return int(raw.seq or 0)

    async def _put_body(self, name: str, body: bytes) -> None:
        assert self.js is not None
        try:
            if self._bodies is None:
                self._bodies = await self.js.object_store(BODIES_BUCKET)
            # Each chunk's PubAck is waited for at most publish_timeout (the
            # context's default timeout); the whole put gets a bound too.
            chunks = len(body) // (128 * 1024) + 2
            await asyncio.wait_for(self._bodies.put(name, body), self.publish_timeout * chunks)
        except Exception as exc:
            self._spawn(self._delete_body(name))
            raise QueueUnavailable(f"object store put failed: {exc!r}") from None

    def _drop_body(self, env: Envelope) -> None:
        if env.body_object:
            self._spawn(self._delete_body(env.body_object))
            env.body_object = ""

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._cleanup.add(task)
        task.add_done_callback(self._cleanup.discard)

    async def _retry(self, what: str, op: Any) -> bool:
        """Run ``op()`` until it succeeds or the clean-up period ends."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CLEANUP_PERIOD
        while loop.time() < deadline:
            try:
                await op()
                return True
            except NotFoundError:
                return True
            except Exception as exc:
                log.debug("%s failed, will retry: %r", what, exc)
            await asyncio.sleep(1.0)
        log.warning("%s did not succeed within %.0fs", what, CLEANUP_PERIOD)
        return False

    async def _purge(self, subject: str) -> None:
        js = self.js
        assert js is not None

        async def purge() -> None:
            await js.purge_stream(MESSAGES_STREAM, subject=subject)

        if await self._retry(f"purge of {subject}", purge):
            # The stream may process a slow publish after the purge request; purge
            # once more when any straggler must have landed.
            await asyncio.sleep(2 * self.publish_timeout)
            await self._retry(f"purge of {subject}", purge)
        self.purged += 1  # what a test waits for, rather than for the time it takes
        log.info("purged %s after an unconfirmed store", subject)

    async def _delete_body(self, name: str) -> None:
        js = self.js
        assert js is not None

        async def delete() -> None:
            bodies = self._bodies or await js.object_store(BODIES_BUCKET)
            await bodies.delete(name)

        await self._retry(f"delete of body {name}", delete)

    async def close(self, grace: float = 2.0) -> None:
        """Give pending clean-ups ``grace`` seconds, then cancel them."""
        if self._cleanup:
            _, pending = await asyncio.wait(set(self._cleanup), timeout=grace)
            for task in pending:
                task.cancel()
