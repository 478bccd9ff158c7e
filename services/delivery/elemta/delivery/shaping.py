"""Traffic shaping per destination, held across every delivery process (KumoMTA's shaping).

A destination's rule (what is limited, merged from the settings, a provider and
the destination's own entry) comes from :mod:`.shapingrules`. A destination
without limits takes none of the paths below, so shaping costs nothing where no
limit applies.

Every limit lives in JetStream KV, so two processes (or pods) share it:

* ``max_connections``: a counting semaphore of leases ``c.<dest>.<slot>`` in
  ``ELEMTA_SHAPING``. A lease is taken with a create (compare-and-set on "no
  such key") when a new session is needed, and the session keeps it while it is
  pooled, busy or idle (:mod:`.pool`); it is refreshed while held and deleted
  only after the session closed (QUIT answered): on an error, after
  ``max_messages_per_connection`` messages, or after
  ``shaping.lease_idle_timeout`` idle (short, so that an idle session in one
  process does not keep a job in another waiting). So the peer never sees more
  connections than leases, and a pooled session costs no KV access per
  message. The bucket's TTL frees the leases of a process that died.
* ``max_message_rate``: a shared schedule ``r.<dest>`` holding the time of the
  last message slot handed out. A message takes the slot ``1/rate`` seconds
  (plus :data:`SLOT_MARGIN`) after it (or now), by compare-and-set, and waits
  for it right before MAIL FROM: messages are spaced evenly, so no second holds
  more than the rate. A message that goes late (a busy event loop) moves the
  slots after it on by its lateness, so it cannot crowd the next second either.
  Where the rate allows at least two slots in :data:`WINDOW` seconds, a process
  takes that many at once, as a window of time of its own in which it may send
  them as they come: one compare-and-set per window instead of per message,
  and still at most the rate in any second (see :meth:`Shaper._pace_window`).
* ``suspend_on``: a reply that matches one of the patterns (searched in
  ``"<code> <enhanced> <text>"``) suspends the recipient domain for
  ``suspend_for`` seconds, as an administrator's suspension does
  (:mod:`elemta.common.suspensions`, KV ``ELEMTA_SUSPENSIONS``): the queue parks
  its jobs until then and delivery makes no connection to it.

Waiting never pins the worker: a job waits for a connection slot at most
``shaping.slot_wait`` seconds, takes a message slot only if it comes within that
time, and only a few jobs per destination wait in one process; the others
raise :class:`Backlogged`, and the worker hands the job back to the stream
with a delay that grows with its redeliveries, keeping its capacity for other
destinations.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from elemta.common.config import Route, ShapingSettings
from elemta.common.envelope import DeliveryJob
from elemta.common.resolver import Resolver
from elemta.common.suspensions import Suspension, Suspensions

from .metrics import SHAPED
from .outcome import Delivery
from .shapingrules import Rule, Rules

__all__ = ["Backlogged", "ConnectionClaim", "Lease", "MessagePacer", "Shaper"]

log = logging.getLogger(__name__)

LEASE_REFRESH = 10.0  # seconds between refreshes of a held lease (bucket TTL: 3x this)
LEASE_TTL = 3 * LEASE_REFRESH
RELEASE_RETRIES = (0.2, 1.0, 3.0, None)  # pauses between tries to delete a lease
# Message slots are spaced this much wider than the rate asks: a message sent a
# few milliseconds late (timers, a busy loop) must not put one more into a second.
SLOT_MARGIN = 0.1
LATE = 0.01  # seconds late for a slot after which the later slots are moved on
# A process takes the message slots of up to this many seconds with one
# compare-and-set when the rate gives at least two in that time.
WINDOW = 0.05
_KEY_CHARS = re.compile(r"[^-_.a-zA-Z0-9]")


class Backlogged(Exception):
    """No slot for this job now: hand it back to the stream for ``delay`` seconds."""

    def __init__(self, dest: str, why: str, delay: float) -> None:
        super().__init__(f"{dest}: {why}")
        self.dest = dest
        self.delay = delay


def _key(dest: str) -> str:
    """``dest`` as a KV key token."""
    return _KEY_CHARS.sub("_", dest).strip(".") or "_"


class Lease:
    """One connection slot to a destination, held until :meth:`release`."""

    def __init__(
        self,
        kv: KeyValue,
        key: str,
        holder: bytes,
        on_release: Callable[[str], None] = lambda key: None,
    ) -> None:
        self.kv = kv
        self.key = key
        self.holder = holder
        self.on_release = on_release
        self._refresh = asyncio.get_running_loop().create_task(self._keep())

    async def _keep(self) -> None:
        while True:
            await asyncio.sleep(LEASE_REFRESH)
            with contextlib.suppress(Exception):
                await self.kv.put(self.key, self.holder)

    async def release(self) -> None:
        """Delete the lease; a delete that fails (a server slow to answer, a
        leader being elected) is tried again a few times before the lease is
        left to expire with the bucket's TTL, which would keep the slot from
        every process for up to ``LEASE_TTL`` seconds."""
        self._refresh.cancel()
        for pause in RELEASE_RETRIES:
            try:
                await self.kv.delete(self.key)
            except Exception as exc:
                if pause is None:
                    log.warning("connection lease %s not released: %r", self.key, exc)
                    return
                await asyncio.sleep(pause)
            else:
                self.on_release(self.key)
                return


class _NoLease:
    """The slot of a destination without a connection limit: nothing to give back."""

    async def release(self) -> None:
        return None


NO_LEASE = _NoLease()


class ConnectionClaim:
    """One job's claim on a destination's connection slots (:class:`~.pool.Claim`).

    The pool asks :meth:`take` when it needs a new session; between tries it
    waits :meth:`pause` for one of the process's sessions to the destination to
    come back. Only ``max_connections`` jobs per destination wait in a process,
    and none longer than ``shaping.slot_wait``: the others raise
    :class:`Backlogged`.
    """

    def __init__(self, shaper: Shaper, rule: Rule, redeliveries: int) -> None:
        self.shaper = shaper
        self.rule = rule
        self.redeliveries = redeliveries
        self.key = f"shaped:{rule.dest}"
        self.max_messages = rule.max_messages_per_connection
        # Only a session holding a lease has a reason to stop idling early.
        self.idle_timeout = shaper.settings.lease_idle_timeout if rule.max_connections else math.inf
        self._deadline: float | None = None
        self._pause = 0.02
        self._waiting = False

    async def take(self) -> Lease | _NoLease | None:
        rule, shaper = self.rule, self.shaper
        if not rule.max_connections:
            return NO_LEASE
        loop = asyncio.get_running_loop()
        if self._deadline is None:
            if shaper._waiting.get(rule.dest, 0) >= rule.max_connections:
                raise shaper._backlogged(rule.dest, "connection limit", self.redeliveries)
            shaper._waiting[rule.dest] = shaper._waiting.get(rule.dest, 0) + 1
            self._waiting = True
            self._deadline = loop.time() + shaper.settings.slot_wait
        lease = await shaper._try_lease(rule)
        if lease is not None:
            self.close()
            return lease
        if loop.time() + self._pause > self._deadline:
            raise shaper._backlogged(rule.dest, "connection limit", self.redeliveries)
        return None

    def pause(self) -> float:
        pause, self._pause = self._pause, min(self._pause * 2, 0.2)
        return pause

    def close(self) -> None:
        """No longer waiting (a lease taken, or the attempt over)."""
        if self._waiting:
            self._waiting = False
            waiting = self.shaper._waiting
            waiting[self.rule.dest] -= 1
            if not waiting[self.rule.dest]:
                del waiting[self.rule.dest]


class MessagePacer:
    """Waits, before each message, for the destination's next shared message slot."""

    def __init__(self, shaper: Shaper, rule: Rule) -> None:
        self.shaper = shaper
        self.rule = rule

    async def __call__(self) -> None:
        await self.shaper.pace(self.rule)


Send = Callable[[MessagePacer | None, ConnectionClaim], Awaitable[Delivery]]


@dataclass
class _Window:
    """Message slots this process took at once: ``left`` of them until ``end``."""

    start: float
    end: float
    left: int


class Shaper:
    """The rules, and the shared state behind them (``leases``: ELEMTA_SHAPING;
    ``suspensions``: the process's view of ELEMTA_SUSPENSIONS)."""

    def __init__(
        self,
        settings: ShapingSettings,
        leases: KeyValue,
        suspensions: Suspensions | None,
        holder: str,
        clock: Callable[[], float] = time.time,
        resolver: Resolver | None = None,
    ) -> None:
        self.settings = settings
        self.rules = Rules(settings, resolver)
        self.leases = leases
        self.suspensions = suspensions
        self.holder = holder.encode()
        self.clock = clock
        self._waiting: dict[str, int] = {}
        # Leases this process gave back, by destination: tried first, and waiters
        # here are woken at once rather than at their next poll.
        self._freed: dict[str, list[str]] = {}
        # The message schedules as this process last wrote them: (last slot,
        # revision), so that the next compare-and-set needs no read first.
        self._schedules: dict[str, tuple[float, int]] = {}
        self._windows: dict[str, _Window] = {}
        self._window_locks: dict[str, asyncio.Lock] = {}

    # -- rules -------------------------------------------------------------

    async def rule_for(self, job: DeliveryJob, route: Route) -> Rule | None:
        """The job's merged rule, or None when no limit applies to it (:class:`.Rules`)."""
        return await self.rules.rule_for(job, route)

    def rule(self, dest: str, mx_hosts: list[str] | tuple[str, ...] = ()) -> Rule | None:
        """The merged rule of ``dest`` with these MX hosts, or None without limits."""
        return self.rules.rule(dest, mx_hosts)

    # -- one shaped attempt --------------------------------------------------

    async def deliver(
        self, job: DeliveryJob, rule: Rule, send: Send, redeliveries: int
    ) -> Delivery:
        """Run ``send`` within the rule; raises :class:`Backlogged` when the job must wait.

        ``send(pacer, claim)``: deliver, awaiting ``pacer`` before each message,
        over a session pooled under ``claim`` (a new one only with a slot of it).
        """
        claim = ConnectionClaim(self, rule, redeliveries)
        try:
            pacer = MessagePacer(self, rule) if rule.max_message_rate else None
            delivery = await send(pacer, claim)
        finally:
            claim.close()
        await self._check_replies(rule, job, delivery)
        return delivery

    def _backoff(self, redeliveries: int) -> float:
        """How long a job without a slot stays away: longer each time it comes back."""
        base = min(self.settings.max_backoff, self.settings.slot_wait * max(1, redeliveries))
        return base * random.uniform(0.75, 1.25)

    def _backlogged(self, dest: str, why: str, redeliveries: int) -> Backlogged:
        SHAPED.labels("backlogged").inc()
        return Backlogged(dest, why, self._backoff(redeliveries))

    async def _try_lease(self, rule: Rule) -> Lease | None:
        """Try the slots this process freed last, then a few at random (not all
        of them: many waiters polling every slot would load the server)."""
        base = f"c.{_key(rule.dest)}"
        freed = self._freed.get(rule.dest, [])
        tries = [freed.pop() for _ in range(min(len(freed), 2))]
        picks = random.sample(range(rule.max_connections), min(rule.max_connections, 4))
        tries += [f"{base}.{slot}" for slot in picks]
        for key in dict.fromkeys(tries):
            try:
                await self.leases.create(key, self.holder)
            except KeyWrongLastSequenceError:
                continue
            return Lease(self.leases, key, self.holder, lambda k: self._released(rule.dest, k))
        return None

    def _released(self, dest: str, key: str) -> None:
        freed = self._freed.setdefault(dest, [])
        if len(freed) < 16:
            freed.append(key)

    async def pace(self, rule: Rule) -> None:
        """Take the destination's next message slot (shared) and wait for it."""
        interval = (1.0 + SLOT_MARGIN) / rule.max_message_rate
        key = f"r.{_key(rule.dest)}"
        batch = int(WINDOW / interval)
        if batch >= 2:
            await self._pace_window(rule, key, interval, batch)
            return
        slot = await self._reserve(rule, key, interval, 1)
        now = self.clock()
        if slot > now:
            SHAPED.labels("paced").inc()
            await asyncio.sleep(slot - now)
        late = self.clock() - slot
        if late > LATE:
            await self._shift(key, slot, late)

    async def _pace_window(self, rule: Rule, key: str, interval: float, batch: int) -> None:
        """Take a slot of this process's window, or ``batch`` new slots as a window.

        A window spans ``batch`` slots (``batch * interval`` seconds) of the shared
        schedule, and its ``batch`` messages go whenever they come within it.
        Windows never overlap, so any second meets at most ``1/span + 1`` of
        them: at most ``rate / (1 + SLOT_MARGIN) + batch`` messages, and
        ``batch`` is at most ``rate * WINDOW / (1 + SLOT_MARGIN)``, under the
        rate's SLOT_MARGIN share.
        """
        lock = self._window_locks.setdefault(key, asyncio.Lock())
        while True:
            window = self._windows.get(key)
            if window is not None and window.left > 0 and self.clock() < window.end:
                window.left -= 1
                wait = window.start - self.clock()
                if wait > 0:
                    SHAPED.labels("paced").inc()
                    await asyncio.sleep(wait)
                return
            async with lock:
                window = self._windows.get(key)
                if window is not None and window.left > 0 and self.clock() < window.end:
                    continue  # another job took a window meanwhile: use it
                start = await self._reserve(rule, key, interval, batch)
                self._windows[key] = _Window(start, start + batch * interval, batch)

    async def _reserve(self, rule: Rule, key: str, interval: float, count: int) -> float:
        """Take ``count`` slots of the shared schedule by compare-and-set; the first's time."""
        known = self._schedules.get(key)
        while True:
            now = self.clock()
            if known is None:
                try:
                    entry = await self.leases.get(key)
                    known = (float(entry.value or b"0"), int(entry.revision or 0))
                except KeyNotFoundError:
                    known = (0.0, 0)
            last, revision = known
            slot = max(now, last + interval)
            if slot - now > self.settings.slot_wait:
                SHAPED.labels("backlogged").inc()
                raise Backlogged(rule.dest, "message rate", slot - now)
            taken = slot + (count - 1) * interval
            value = f"{taken:.6f}".encode()
            try:
                if revision:
                    revision = await self.leases.update(key, value, last=revision)
                else:
                    revision = await self.leases.create(key, value)
            except KeyWrongLastSequenceError:
                known = None  # another process took slots meanwhile: read again
                continue
            self._schedules[key] = (taken, revision)
            return slot

    async def _shift(self, key: str, slot: float, late: float) -> None:
        """This message goes ``late`` seconds after its slot: move the slots handed
        out after it on by as much, so the next second still holds only the rate."""
        for _ in range(5):
            try:
                entry = await self.leases.get(key)
                last = float(entry.value or b"0")
                if last < slot:
                    return  # the schedule has moved past us already
                await self.leases.update(
                    key, f"{last + late:.6f}".encode(), last=int(entry.revision or 0)
                )
                return
            except KeyWrongLastSequenceError:
                continue
            except (KeyNotFoundError, ValueError):
                return

    # -- suspensions ---------------------------------------------------------

    async def _check_replies(self, rule: Rule, job: DeliveryJob, delivery: Delivery) -> None:
        if not rule.suspend_on or self.suspensions is None:
            return
        for r in delivery.results:
            said = f"{r.code} {r.enhanced} {r.text}"
            if any(p.search(said) for p in rule.suspend_on):
                now = self.clock()
                domain = job.domain.lower().rstrip(".")
                await self.suspensions.put(
                    Suspension(
                        domain=domain,
                        reason=f"{delivery.host or rule.dest} said: {said}"[:500],
                        until=now + rule.suspend_for,
                        created_at=now,
                        created_by=f"shaping:{self.holder.decode()}",
                    )
                )
                SHAPED.labels("suspensions").inc()
                log.warning(
                    "delivery to %s suspended for %.0fs: %s", domain, rule.suspend_for, said
                )
                return
