"""Sessions kept open between messages, per peer address and port.

A job takes a session with :meth:`Pool.acquire` and hands it back with
:meth:`Pool.release`; a session that ended cleanly waits, idle, for the next
message to the same peer for up to ``idle_connection_timeout`` seconds. Before
an idle session carries another message it must answer RSET: that both resets
the transaction and proves the peer still listens. A session whose last message
got its final reply (the transaction is over, RFC 5321 4.1.1.4) and that waited
less than ``UNCHECKED_REUSE`` seconds skips the RSET, a round trip per message
under load; :meth:`Pool.unchecked` tells its user, which gives the message to
another session when that one turns out to be gone before MAIL FROM was
answered. A session that saw an error is closed, never reused. At most ``max_connections_per_destination`` sessions
(busy or idle) are open to one peer; further jobs wait for one to come free.

A job held to a connection limit shared with other processes (traffic shaping,
:mod:`.shaping`) brings a :class:`Claim`: a new session is opened only once the
claim yields a :class:`Held` slot (a lease in KV), and the session keeps that
slot while it is idle. The slot goes back only after the session has closed
(QUIT answered), so the peer never sees more connections than slots: when the
session saw an error, carried the claim's ``max_messages``, or sat idle for
the claim's ``idle_timeout`` (shorter than the pool's, so that an idle session
in one process does not hold a slot that a job in another waits for). Such
sessions are pooled under the claim's key of their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Generic, Protocol, TypeVar

from .metrics import CONNECTIONS_OPENED, CONNECTIONS_REUSED

__all__ = ["Claim", "Held", "Pool", "Session"]

log = logging.getLogger(__name__)

Key = tuple[object, ...]  # (address, port[, TLS requirement])

UNCHECKED_REUSE = 1.0  # seconds idle after a finished transaction that need no RSET


class Session(Protocol):
    @property
    def usable(self) -> bool: ...
    @property
    def clean(self) -> bool: ...  # the last transaction got its final reply
    async def reset(self) -> bool: ...
    async def quit(self) -> None: ...
    def close(self) -> None: ...


S = TypeVar("S", bound=Session)


class Held(Protocol):
    """A connection slot held outside this process; given back after the session closed."""

    async def release(self) -> None: ...


class Claim(Protocol):
    """The right to open a session under a shared connection limit."""

    @property
    def key(self) -> str: ...
    @property
    def max_messages(self) -> int: ...
    @property
    def idle_timeout(self) -> float: ...
    async def take(self) -> Held | None:
        """A slot, or None when none is free now (wait :meth:`pause`, then ask again);
        raises when the job must stop waiting."""
        ...

    def pause(self) -> float: ...


class _Slot:
    """What a claimed session carries: its slot, and the messages it has sent."""

    __slots__ = ("held", "idle", "left", "timer")

    def __init__(self, held: Held, max_messages: int, idle: float) -> None:
        self.held = held
        self.left = max_messages or -1  # -1: no limit
        self.idle = idle
        self.timer: asyncio.TimerHandle | None = None


class Pool(Generic[S]):
    def __init__(self, max_per_peer: int, idle_timeout: float) -> None:
        self.max_per_peer = max_per_peer
        self.idle_timeout = idle_timeout
        self._idle: dict[Key, list[tuple[float, S]]] = {}
        self._open: dict[Key, int] = {}
        self._waiters: dict[Key, deque[asyncio.Future[None]]] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._reaper: asyncio.Task[None] | None = None
        self._closed = False
        self._unchecked: weakref.WeakSet[S] = weakref.WeakSet()
        self._slots: dict[int, _Slot] = {}  # id(session) -> its slot, for claimed sessions

    def open_count(self, key: Key) -> int:
        return self._open.get(key, 0)

    def idle_count(self, key: Key) -> int:
        return len(self._idle.get(key, ()))

    def unchecked(self, session: S) -> bool:
        """Whether ``session`` was handed out again without an RSET."""
        return session in self._unchecked

    async def acquire(
        self, key: Key, opener: Callable[[], Awaitable[S]], claim: Claim | None = None
    ) -> S:
        """An idle session that answered RSET (or just finished a transaction),
        else a new one from ``opener`` (with ``claim``, once it yields a slot)."""
        if self._reaper is None and self.idle_timeout > 0:
            self._reaper = asyncio.create_task(self._reap())
        while True:
            if self._closed:
                raise RuntimeError("connection pool is closed")
            idle = self._idle.get(key)
            while idle:
                since, session = idle.pop()
                slot = self._slots.get(id(session))
                if slot is not None and slot.timer is not None:
                    slot.timer.cancel()
                waited = time.monotonic() - since
                if waited > self.idle_timeout or not session.usable:
                    self._retire(key, session, polite=session.usable)
                    continue
                if session.clean and waited < UNCHECKED_REUSE:
                    self._unchecked.add(session)
                    CONNECTIONS_REUSED.inc()
                    return session
                try:
                    alive = await session.reset()
                except BaseException:  # cancelled while checking it
                    self._retire(key, session, polite=False)
                    raise
                if alive:
                    CONNECTIONS_REUSED.inc()
                    return session
                self._retire(key, session, polite=False)
            if self._open.get(key, 0) < self.max_per_peer:
                held = None
                if claim is not None:
                    held = await claim.take()
                    if held is None:  # none free: a session of ours may come back first
                        await self._wait_turn(key, claim.pause())
                        continue
                    if self._idle.get(key):  # one came back while we asked
                        self._let_go(key, held)
                        continue
                self._open[key] = self._open.get(key, 0) + 1
                try:
                    session = await opener()
                except BaseException:
                    self._forget(key)
                    if held is not None:
                        self._let_go(key, held)
                    raise
                if held is not None and claim is not None:
                    self._slots[id(session)] = _Slot(held, claim.max_messages, claim.idle_timeout)
                CONNECTIONS_OPENED.inc()
                return session
            await self._wait_turn(key)

    def release(self, key: Key, session: S, reuse: bool) -> None:
        """Give a session back: kept idle when ``reuse`` and it is healthy, else closed."""
        self._unchecked.discard(session)
        slot = self._slots.get(id(session))
        if slot is not None and slot.left > 0:
            slot.left -= 1
            if not slot.left:  # its messages per connection are spent
                self._retire(key, session, polite=reuse and session.usable)
                return
        if reuse and not self._closed and self.idle_timeout > 0 and session.usable:
            self._idle.setdefault(key, []).append((time.monotonic(), session))
            if slot is not None:
                slot.timer = asyncio.get_running_loop().call_later(
                    min(slot.idle, self.idle_timeout), self._expire, key, session
                )
            self._wake(key)
        else:
            self._retire(key, session, polite=reuse and session.usable)

    async def close(self) -> None:
        """Say QUIT to every idle session; sessions still busy close when released."""
        self._closed = True
        if self._reaper is not None:
            self._reaper.cancel()
        for key, idle in list(self._idle.items()):
            while idle:
                self._retire(key, idle.pop()[1], polite=True)
        for waiters in self._waiters.values():
            for fut in waiters:
                if not fut.done():
                    fut.set_result(None)
        if self._background:
            await asyncio.wait(list(self._background), timeout=5)

    # -- internals -------------------------------------------------------------

    async def _wait_turn(self, key: Key, at_most: float | None = None) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiters = self._waiters.setdefault(key, deque())
        waiters.append(fut)
        try:
            if at_most is None:
                await fut
            else:
                await asyncio.wait([fut], timeout=at_most)
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self._wake(key)  # our turn came as we were cancelled: pass it on
            raise
        finally:
            with contextlib.suppress(ValueError):
                waiters.remove(fut)
            if not waiters and self._waiters.get(key) is waiters:
                del self._waiters[key]

    def _wake(self, key: Key) -> None:
        waiters = self._waiters.get(key)
        while waiters:
            fut = waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return

    def _forget(self, key: Key) -> None:
        left = self._open.get(key, 0) - 1
        if left > 0:
            self._open[key] = left
        else:
            self._open.pop(key, None)
            if not self._idle.get(key):
                self._idle.pop(key, None)
        self._wake(key)

    def _expire(self, key: Key, session: S) -> None:
        """A claimed session's idle time is over: close it and give its slot back."""
        idle = self._idle.get(key, [])
        for i, (_, s) in enumerate(idle):
            if s is session:
                del idle[i]
                self._retire(key, session, polite=session.usable)
                return

    def _retire(self, key: Key, session: S, polite: bool) -> None:
        self._forget(key)
        slot = self._slots.pop(id(session), None)
        if slot is not None and slot.timer is not None:
            slot.timer.cancel()
        if polite:
            self._spawn(self._quit(key, session, slot.held if slot else None))
        else:
            session.close()
            if slot is not None:
                self._let_go(key, slot.held)

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _let_go(self, key: Key, held: Held) -> None:
        """Give a slot back (in the background), then wake a job waiting for one."""

        async def release() -> None:
            await held.release()
            self._wake(key)

        self._spawn(release())

    async def _quit(self, key: Key, session: Session, held: Held | None) -> None:
        try:
            await asyncio.wait_for(session.quit(), 5)
        except Exception:
            pass
        finally:
            session.close()
            if held is not None:  # only now: the peer has seen the connection end
                await held.release()
                self._wake(key)

    async def _reap(self) -> None:
        interval = max(0.25, min(self.idle_timeout / 2, 5.0))
        while not self._closed:
            await asyncio.sleep(interval)
            now = time.monotonic()
            for key, idle in list(self._idle.items()):
                expired = [s for since, s in idle if now - since > self.idle_timeout]
                idle[:] = [(since, s) for since, s in idle if now - since <= self.idle_timeout]
                for session in expired:
                    self._retire(key, session, polite=session.usable)
                if not idle and not self._open.get(key):
                    self._idle.pop(key, None)
