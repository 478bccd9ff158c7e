"""Before a redelivered message or job is attempted again: was it reported already?

JetStream offers a message again when its acknowledgement did not arrive: the
process was killed after the report was stored, or the ack died with a
nats-server node. A nats-server killed with SIGKILL also forgets, when it starts
again, the last second or so of its consumers' progress (their state is written
behind, the messages are not): messages handed out and acked before the kill come
again as if new (``num_delivered`` 1). Attempting either again would deliver the
mail a second time, so a message or job is looked up first when it is offered
again (``num_delivered > 1``), comes below a sequence its consumer already handed this
process (a new consumer leader in a cluster that had not received the latest
acks hands them out again as new, with no reconnection to notice), or was stored
before this process last connected to NATS (a server restart), with reads from
the stream leader; a message stored and delivered while the connection holds, the
common case, costs nothing here. "Stored before the connection" is told by stream
sequence: at every (re)connection the last sequences of ``ELEMTA_MESSAGES`` and
``ELEMTA_DELIVERY`` are read, and a message above them came later. Until they are
known, by the clock: stored up to ``CLOCK_MARGIN`` seconds after the connection
(the stream's clock may run ahead), which under steady load meant every message of
the first seconds after a start was looked up:

* a stored message (first attempt) is done when ``elemta.outcome.<id>`` holds
  anything (its report is stored and not yet taken by the queue: every record on
  that subject comes after the first report), when the message is no longer in
  ``ELEMTA_MESSAGES`` (the queue finished it), or when the queue holds its state
  in ``ELEMTA_STATE`` (the queue took the report over), or when its history
  (the last record on ``elemta.events.<id>``, or its events in a record of its
  bucket, :mod:`elemta.common.history`) says ``done``: every recipient is
  final (delivery stores that record before it acks; the copy stays until the
  queue's reclaimer removes ended messages in bulk): :data:`LEFTOVER`, acked
  without an attempt;
* a job is done when its outcome (``Nats-Msg-Id: outcome.<id>.<job seq>``) is
  still waiting in ``ELEMTA_OUTCOMES``. A job whose message is gone is dropped as
  before (:mod:`.body`).

Two processes can both hold the same message after a restart: one took it just
before the server died and looks it up once the server is back, the restarted
server (which forgot that hand-out) gives it to the other as new, and both find
nothing reported yet. So a message or job that was looked up is also *claimed*
before it is attempted: a key ``first.<id>`` or ``job.<id>.<seq>`` created in KV
``ELEMTA_CLAIMS``, whose TTL is ``delivery.ack_wait``. Whoever finds the key
there leaves the message to the other (nak with a delay); when it is offered
again, the lookup finds the other's report. A claimant killed before its report
holds the message back for about as long as the ack it never sent would have. A claim that cannot be written means
"attempt it", as a lookup without an answer does. Only looked-up messages are
claimed, so the common case writes nothing more.

A lookup that gets no answer (a cluster electing a leader, a node gone) is
tried again for up to ``LOOKUP_PATIENCE`` seconds; anything else, and a lookup
that never gets an answer, means "attempt it": a lookup may cost a copy, never a
message.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.errors import KeyWrongLastSequenceError, NotFoundError
from nats.js.kv import KeyValue

from elemta.common.evidence import own_end, queue_state, report_waiting
from elemta.common.history import EndedIndex
from elemta.common.jetstream import (
    DELIVERY_STREAM,
    MESSAGES_STREAM,
    OUTCOME_SUBJECT,
    OUTCOMES_STREAM,
)
from elemta.common.names import msg_subject
from elemta.common.patience import Patience

__all__ = ["CLAIMED_RETRY", "LEFTOVER", "LOOKUP_PATIENCE", "Reported"]

log = logging.getLogger(__name__)

_MAX_SCAN = 32  # outcomes of one message looked at for a job's own
LOOKUP_PATIENCE = 10.0  # seconds a lookup without an answer is tried again
CLAIMED_RETRY = 5.0  # seconds before a message claimed by another is offered again
CLOCK_MARGIN = 5.0  # seconds: the stream's clock may run ahead of this process's
# why a message needs no attempt although its stored copy is still there
LEFTOVER = "its history says done"
_EVERYTHING = 2**63  # "stored before" every sequence: look everything up


class _NoAnswer(Exception):
    """A lookup that got no answer in time."""


class Reported:
    """Lookups of what is stored about a message; each answers why it is done, or ''."""

    def __init__(
        self,
        js: JetStreamContext,
        patience: float = LOOKUP_PATIENCE,
        connected_at: Callable[[], float] = lambda: 0.0,
        claims: KeyValue | None = None,
        owner: str = "",
    ) -> None:
        self.claims = claims  # KV ELEMTA_CLAIMS; None: nothing is claimed
        self.owner = owner  # who claims: the process's worker name
        self.js = js
        self._ends = EndedIndex(js)  # leader reads: a decision, not a view
        self.patience = patience
        self.connected_at = connected_at  # epoch seconds of the latest (re)connection
        # stream -> its last sequence when read after the latest (re)connection
        self._stored_before: dict[str, int] = {}
        self._connection = 0  # counts (re)connections and losses, so a late read is dropped
        # (stream, consumer) -> the highest stream sequence it handed this process
        self._highest: dict[tuple[str, str], int] = {}
        self._reading: asyncio.Task[None] | None = None

    def worth_asking(self, msg: Msg) -> bool:
        """Offered again, offered below what this consumer already handed out, or
        stored before the latest connection to NATS."""
        meta = msg.metadata
        if (meta.num_delivered or 1) > 1:
            return True
        seq = meta.sequence.stream or 0
        key = (meta.stream or "", meta.consumer or "")
        highest = self._highest.get(key, 0)
        if seq > highest:
            self._highest[key] = seq
        elif seq:
            # A consumer hands messages out in stream order; one that comes back to
            # an earlier one as new lost the acks since (a new consumer leader of a
            # cluster whose acks had not reached it): the connection never broke.
            return True
        last = self._stored_before.get(meta.stream or "")
        if last is not None:
            return meta.sequence.stream is None or meta.sequence.stream <= last
        stored_at = meta.timestamp.timestamp() if meta.timestamp else 0.0
        return stored_at <= self.connected_at() + CLOCK_MARGIN

    def connection_changed(self, up: bool) -> None:
        """The connection to NATS was lost (``up`` False) or made: what was stored
        before it is read again, and told by the clock until then."""
        self._connection += 1
        self._stored_before = {}
        self._ends = EndedIndex(self.js)  # read afresh: a stream's tail may have moved
        if up:
            self._reading = asyncio.get_running_loop().create_task(
                self._read_last_sequences(self._connection)
            )

    def leader_changed(self) -> None:
        """A consumer of ours got a new leader (a node of the cluster gone): it may
        hand out again, as new, messages whose acks it never received, with no
        reconnection of ours. Everything is looked up until the last sequences are
        read anew, then what was stored before them."""
        self._connection += 1
        self._stored_before = {MESSAGES_STREAM: _EVERYTHING, DELIVERY_STREAM: _EVERYTHING}
        self._ends = EndedIndex(self.js)  # read afresh: a stream's tail may have moved
        self._reading = asyncio.get_running_loop().create_task(
            self._read_last_sequences(self._connection)
        )

    async def sequences_read(self) -> None:
        """Return once the read started by the latest connection is over."""
        if self._reading is not None:
            await asyncio.shield(self._reading)

    async def _read_last_sequences(self, connection: int) -> None:
        found: dict[str, int] = {}
        for stream in (MESSAGES_STREAM, DELIVERY_STREAM):
            try:
                info = await self.js.stream_info(stream)
            except Exception as exc:  # the clock decides meanwhile
                log.info("cannot read the last sequence of %s (%r)", stream, exc)
                continue
            found[stream] = info.state.last_seq
        if connection == self._connection:  # no loss or new connection meanwhile
            self._stored_before = found

    async def first(self, qid: str, msg_seq: int) -> str:
        """Why the stored message ``qid`` at ``msg_seq`` needs no first attempt, or ''.

        A message delivery ended keeps its copy until the queue's bulk removal, so a
        message handed out again — its ack lost, or as new by a restarted server
        that forgot its consumer's progress — is looked for in the batch records
        of its bucket too (:class:`~elemta.common.history.EndedIndex`: each bucket
        read once, then only what is new)."""
        return await self._patiently(qid, lambda: self._first(qid))

    async def claim(self, key: str) -> bool:
        """Claim a looked-up message or job before attempting it: False when another
        attempt holds it (leave it to that one); True when claimed, or when the
        claim cannot be written (then it is attempted, as before claims)."""
        if self.claims is None:
            return True
        try:
            await self.claims.create(key, self.owner.encode())
        except KeyWrongLastSequenceError:
            return False
        except Exception as exc:
            log.info("%s: not claimed (%r); attempting it", key, exc)
        return True

    async def release(self, key: str) -> None:
        """Give a claim back when the attempt ended without a report (the message
        goes back to the stream): its next offer need not wait for the TTL."""
        if self.claims is None:
            return
        try:
            await self.claims.delete(key)
        except Exception as exc:  # it expires with the TTL
            log.debug("%s: claim not given back: %r", key, exc)

    async def job(self, qid: str, job_seq: int) -> str:
        """Why the job at ``job_seq`` of message ``qid`` needs no attempt, or ''."""
        return await self._patiently(qid, lambda: self._job(qid, job_seq))

    async def _patiently(self, qid: str, lookup: Callable[[], Awaitable[str]]) -> str:
        patience = Patience(self.patience)
        while True:
            try:
                return await lookup()
            except _NoAnswer as exc:
                log.debug("%s: no answer yet (%s)", qid, exc)
                if not await patience.pause():
                    log.info(
                        "%s: cannot tell whether it was reported (%s); attempting it", qid, exc
                    )
                    return ""

    async def _first(self, qid: str) -> str:
        try:
            if await report_waiting(self.js, qid):
                return "its report is stored"
            if not await self._stored(qid):
                return "it is finished"
            if await queue_state(self.js, qid) is not None:
                return "the queue holds it"
            # delivery stores the history of what it ends several to a record
            if await own_end(self.js, qid) or await self._ends.ended(qid):
                return LEFTOVER
        except Exception as exc:
            raise _NoAnswer(repr(exc)) from None
        return ""

    async def _stored(self, qid: str) -> bool:
        """Whether ``ELEMTA_MESSAGES`` still holds message ``qid``, in any class.

        Counted by subject in the stream's state (the leader answers), not read:
        reading the message would bring its whole body, base64 in JSON, which on
        a 100 KB message cost more CPU in nats-server and here than delivering it.
        Its subject is unique (ingress stores it with ``Nats-Msg-Id: <id>``).
        """
        for klass in ("normal", "*"):  # elemta.msg.<id>, then elemta.<class>.msg.<id>
            filtered = msg_subject(qid, klass)
            info = await self.js.stream_info(MESSAGES_STREAM, subjects_filter=filtered)
            if info.state.subjects:
                return True
        return False

    async def _job(self, qid: str, job_seq: int) -> str:
        want = f"outcome.{qid}.{job_seq}"
        seq = 1
        try:
            for _ in range(_MAX_SCAN):
                raw = await self.js.get_msg(
                    OUTCOMES_STREAM, seq=seq, subject=f"{OUTCOME_SUBJECT}.{qid}", next=True
                )
                if (raw.headers or {}).get("Nats-Msg-Id") == want:
                    return "its outcome is stored"
                seq = (raw.seq or seq) + 1
        except NotFoundError:
            pass
        except Exception as exc:
            raise _NoAnswer(repr(exc)) from None
        return ""
