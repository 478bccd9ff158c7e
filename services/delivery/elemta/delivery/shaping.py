"""Traffic shaping per destination, held across every delivery process (KumoMTA's shaping).

A destination is the recipient domain of an MX route, or the next hop
(``[host]:port``) of a relay route. Its rule is the limits of the ``[shaping]``
section merged with the most specific entry of ``shaping.destinations`` (the
domain, then ``.parent`` entries, as transport routes match): the keys the
entry sets win.
A destination without limits takes none of the paths below, so shaping costs
nothing where no limit applies.

Every limit lives in JetStream KV, so two processes (or pods) share it:

* ``max_connections``: a counting semaphore of leases ``c.<dest>.<slot>`` in
  ``ELEMTA_SHAPING``. A lease is taken with a create (compare-and-set on "no
  such key"), refreshed while held and deleted on release; the bucket's TTL
  frees the lease of a process that died. A shaped attempt opens its own
  session and closes it (QUIT, answer awaited) before the lease goes back, so
  the peer never sees more connections than leases.
* ``max_message_rate``: a shared schedule ``r.<dest>`` holding the time of the
  last message slot handed out. A message takes the slot ``1/rate`` seconds
  (plus :data:`SLOT_MARGIN`) after it (or now), by compare-and-set, and waits
  for it right before MAIL FROM: messages are spaced evenly, so no second holds
  more than the rate. A message that goes late (a busy event loop) moves the
  slots after it on by its lateness, so it cannot crowd the next second either.
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
import random
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from elemta.common.config import Route, ShapingRule, ShapingSettings
from elemta.common.envelope import DeliveryJob
from elemta.common.suspensions import Suspension, Suspensions

from .metrics import SHAPED
from .outcome import Delivery

__all__ = ["Backlogged", "Lease", "MessagePacer", "Shaper", "destination_of"]

log = logging.getLogger(__name__)

LEASE_REFRESH = 10.0  # seconds between refreshes of a held lease (bucket TTL: 3x this)
LEASE_TTL = 3 * LEASE_REFRESH
RULE_CACHE = 10000  # merged rules kept (destinations seen)
# Message slots are spaced this much wider than the rate asks: a message sent a
# few milliseconds late (timers, a busy loop) must not put one more into a second.
SLOT_MARGIN = 0.1
LATE = 0.01  # seconds late for a slot after which the later slots are moved on
_KEY_CHARS = re.compile(r"[^-_.a-zA-Z0-9]")


class Backlogged(Exception):
    """No slot for this job now: hand it back to the stream for ``delay`` seconds."""

    def __init__(self, dest: str, why: str, delay: float) -> None:
        super().__init__(f"{dest}: {why}")
        self.dest = dest
        self.delay = delay


def destination_of(job: DeliveryJob, route: Route) -> str:
    """The shaping unit of a job: ``[host]:port`` for a relay, else the recipient domain."""
    if route.kind == "smtp" and not route.mx_lookup:
        return f"[{route.host}]:{route.port}"
    return (route.host if route.kind == "smtp" else job.domain).lower()


def _key(dest: str) -> str:
    """``dest`` as a KV key token."""
    return _KEY_CHARS.sub("_", dest).strip(".") or "_"


@dataclass(frozen=True)
class Rule:
    dest: str
    max_connections: int
    max_message_rate: float
    suspend_on: tuple[re.Pattern[str], ...]
    suspend_for: float

    @property
    def limited(self) -> bool:
        return bool(self.max_connections or self.max_message_rate or self.suspend_on)


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
        self._refresh.cancel()
        try:
            await self.kv.delete(self.key)
        except Exception as exc:  # it expires with the bucket's TTL instead
            log.warning("connection lease %s not released: %r", self.key, exc)
            return
        self.on_release(self.key)


class MessagePacer:
    """Waits, before each message, for the destination's next shared message slot."""

    def __init__(self, shaper: Shaper, rule: Rule) -> None:
        self.shaper = shaper
        self.rule = rule

    async def __call__(self) -> None:
        await self.shaper.pace(self.rule)


Send = Callable[[MessagePacer | None, bool], Awaitable[Delivery]]


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
    ) -> None:
        self.settings = settings
        self.leases = leases
        self.suspensions = suspensions
        self.holder = holder.encode()
        self.clock = clock
        self._waiting: dict[str, int] = {}
        self._rules: dict[str, Rule] = {}
        # Leases this process gave back, by destination: tried first, and waiters
        # here are woken at once rather than at their next poll.
        self._freed: dict[str, list[str]] = {}
        self._wake: dict[str, asyncio.Event] = {}

    # -- rules -------------------------------------------------------------

    def rule_for(self, job: DeliveryJob, route: Route) -> Rule | None:
        """The destination's merged rule, or None when no limit applies to it."""
        dest = destination_of(job, route)
        rule = self._rules.get(dest)
        if rule is None:
            if len(self._rules) >= RULE_CACHE:
                self._rules.clear()
            rule = self._rules[dest] = self._merge(dest)
        return rule if rule.limited else None

    def _merge(self, dest: str) -> Rule:
        base = self.settings
        merged: dict[str, object] = {k: getattr(base, k) for k in ShapingRule.model_fields}
        entry = self._entry(dest)
        if entry is not None:
            merged.update({k: getattr(entry, k) for k in entry.model_fields_set})
        rule = ShapingRule(**merged)
        return Rule(
            dest=dest,
            max_connections=rule.max_connections,
            max_message_rate=rule.max_message_rate,
            suspend_on=tuple(re.compile(p, re.IGNORECASE) for p in rule.suspend_on),
            suspend_for=rule.suspend_for,
        )

    def _entry(self, dest: str) -> ShapingRule | None:
        table = self.settings.destinations
        if dest in table:
            return table[dest]
        labels = dest.split(".")
        for i in range(1, len(labels)):
            parent = "." + ".".join(labels[i:])
            if parent in table:
                return table[parent]
        return None

    # -- one shaped attempt --------------------------------------------------

    async def deliver(
        self, job: DeliveryJob, rule: Rule, send: Send, redeliveries: int
    ) -> Delivery:
        """Run ``send`` within the rule; raises :class:`Backlogged` when the job must wait.

        ``send(pacer, pooled)``: deliver, awaiting ``pacer`` before each
        message; ``pooled`` False means open a session of its own and close it
        before returning.
        """
        lease = None
        if rule.max_connections:
            lease = await self._connection(rule, redeliveries)
        try:
            pacer = MessagePacer(self, rule) if rule.max_message_rate else None
            delivery = await send(pacer, lease is None)
        finally:
            if lease is not None:
                await lease.release()
        await self._check_replies(rule, job, delivery)
        return delivery

    def _backoff(self, redeliveries: int) -> float:
        """How long a job without a slot stays away: longer each time it comes back."""
        base = min(self.settings.max_backoff, self.settings.slot_wait * max(1, redeliveries))
        return base * random.uniform(0.75, 1.25)

    async def _connection(self, rule: Rule, redeliveries: int) -> Lease:
        """A connection lease, waiting at most ``slot_wait``; else :class:`Backlogged`."""
        dest = rule.dest
        if self._waiting.get(dest, 0) >= rule.max_connections:
            SHAPED.labels("backlogged").inc()
            raise Backlogged(dest, "connection limit", self._backoff(redeliveries))
        self._waiting[dest] = self._waiting.get(dest, 0) + 1
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.settings.slot_wait
            pause = 0.02
            wake = self._wake.setdefault(dest, asyncio.Event())
            while True:
                lease = await self._try_lease(rule)
                if lease is not None:
                    return lease
                if loop.time() + pause > deadline:
                    SHAPED.labels("backlogged").inc()
                    raise Backlogged(dest, "connection limit", self._backoff(redeliveries))
                wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), pause)
                pause = min(pause * 2, 0.2)
        finally:
            self._waiting[dest] -= 1
            if not self._waiting[dest]:
                del self._waiting[dest]
                self._wake.pop(dest, None)

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
        wake = self._wake.get(dest)
        if wake is not None:
            wake.set()

    async def pace(self, rule: Rule) -> None:
        """Take the destination's next message slot (shared) and wait for it."""
        interval = (1.0 + SLOT_MARGIN) / rule.max_message_rate
        key = f"r.{_key(rule.dest)}"
        while True:
            now = self.clock()
            try:
                entry = await self.leases.get(key)
                last, revision = float(entry.value or b"0"), int(entry.revision or 0)
            except KeyNotFoundError:
                last, revision = 0.0, 0
            slot = max(now, last + interval)
            if slot - now > self.settings.slot_wait:
                SHAPED.labels("backlogged").inc()
                raise Backlogged(rule.dest, "message rate", slot - now)
            value = f"{slot:.6f}".encode()
            try:
                if revision:
                    await self.leases.update(key, value, last=revision)
                else:
                    await self.leases.create(key, value)
            except KeyWrongLastSequenceError:
                continue  # another process took a slot meanwhile: read again
            break
        if slot > now:
            SHAPED.labels("paced").inc()
            await asyncio.sleep(slot - now)
        late = self.clock() - slot
        if late > LATE:
            await self._shift(key, slot, late)

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
