"""Fetching the stored message a job names, without copying it through the job.

Inline bodies are read by stream sequence with a direct get on
``ELEMTA_MESSAGES`` (any replica answers, no consumer needed); large bodies
come from the Object Store ``ELEMTA_BODIES``. ``None`` means the message is no
longer stored: the queue deletes it once every recipient is finished, so a job
that outlived its message (a redelivery after the outcome was already handled)
has nothing left to do.
"""

from __future__ import annotations

import logging

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from nats.js.object_store import ObjectStore

from elemta.common.envelope import DeliveryJob
from elemta.common.jetstream import BODIES_BUCKET, MESSAGES_STREAM
from elemta.common.names import stored_subjects

__all__ = ["BodyStore", "BodyUnavailable"]

log = logging.getLogger(__name__)


class BodyUnavailable(Exception):
    """The store did not answer; the job should come back later."""


class BodyStore:
    def __init__(self, js: JetStreamContext) -> None:
        self.js = js
        self._objects: ObjectStore | None = None

    async def fetch(self, job: DeliveryJob) -> bytes | None:
        """The raw message (CRLF lines), or None when it is no longer stored."""
        try:
            if job.body_object:
                return await self._from_object_store(job.body_object)
            raw = await self.js.get_msg(MESSAGES_STREAM, seq=job.msg_seq, direct=True)
        except NotFoundError:
            return None
        except Exception as exc:
            raise BodyUnavailable(f"cannot fetch message {job.id}: {exc!r}") from exc
        if raw.subject not in stored_subjects(job.id):
            log.warning(
                "stream sequence %d holds %s, not message %s", job.msg_seq, raw.subject, job.id
            )
            return None
        return raw.data or b""

    async def _from_object_store(self, name: str) -> bytes:
        if self._objects is None:
            self._objects = await self.js.object_store(BODIES_BUCKET)
        result = await self._objects.get(name)
        return result.data or b""
