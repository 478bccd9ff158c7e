"""Sessions kept open between messages, per peer address and port.

A job takes a session with :meth:`Pool.acquire` and hands it back with
:meth:`Pool.release`; a session that ended cleanly waits, idle, for the next
message to the same peer for up to ``idle_connection_timeout`` seconds. Before
an idle session carries another message it must answer RSET: that both resets
the transaction and proves the peer still listens. A session that saw an error
is closed, never reused. At most ``max_connections_per_destination`` sessions
(busy or idle) are open to one peer; further jobs wait for one to come free.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Generic, Protocol, TypeVar

from .metrics import CONNECTIONS_OPENED, CONNECTIONS_REUSED

__all__ = ["Pool", "Session"]

log = logging.getLogger(__name__)

Key = tuple[object, ...]  # (address, port[, TLS requirement])


class Session(Protocol):
    @property
    def usable(self) -> bool: ...
    async def reset(self) -> bool: ...
    async def quit(self) -> None: ...
    def close(self) -> None: ...


S = TypeVar("S", bound=Session)


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

    def open_count(self, key: Key) -> int:
        return self._open.get(key, 0)

    def idle_count(self, key: Key) -> int:
        return len(self._idle.get(key, ()))

    async def acquire(self, key: Key, opener: Callable[[], Awaitable[S]]) -> S:
        """An idle session that answered RSET, else a new one from ``opener``."""
        if self._reaper is None and self.idle_timeout > 0:
            self._reaper = asyncio.create_task(self._reap())
        while True:
            if self._closed:
                raise RuntimeError("connection pool is closed")
            idle = self._idle.get(key)
            while idle:
                since, session = idle.pop()
                if time.monotonic() - since > self.idle_timeout or not session.usable:
                    self._retire(key, session, polite=session.usable)
                    continue
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
                self._open[key] = self._open.get(key, 0) + 1
                try:
                    session = await opener()
                except BaseException:
                    self._forget(key)
                    raise
                CONNECTIONS_OPENED.inc()
                return session
            await self._wait_turn(key)

    def release(self, key: Key, session: S, reuse: bool) -> None:
        """Give a session back: kept idle when ``reuse`` and it is healthy, else closed."""
        if reuse and not self._closed and self.idle_timeout > 0 and session.usable:
            self._idle.setdefault(key, []).append((time.monotonic(), session))
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

    async def _wait_turn(self, key: Key) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiters = self._waiters.setdefault(key, deque())
        waiters.append(fut)
        try:
            await fut
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

    def _retire(self, key: Key, session: S, polite: bool) -> None:
        self._forget(key)
        if polite:
            task = asyncio.create_task(self._quit(session))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        else:
            session.close()

    @staticmethod
    async def _quit(session: Session) -> None:
        try:
            await asyncio.wait_for(session.quit(), 5)
        except Exception:
            pass
        finally:
            session.close()

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
