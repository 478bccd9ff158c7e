"""Restarting what stopped on its own, as Postfix's master(8) does.

Once the system is up, a child (a service or a nats-server node) that exits or is
killed is started again: immediately after a long run, with a growing pause
after each quick failure (``first``, doubled per quick failure, at most ``cap``
seconds), so that a service that cannot start does not spin. Every exit and
every restart is logged on the launcher's stderr (the journal, under systemd),
with the end of the child's own log when it exited with an error status; a
restarted child that answers ``/readyz`` again is logged too, so an operator
sees how long it was away.

Nothing here stops the system: only a signal to the launcher does.
"""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .processes import Child

__all__ = ["Backoff", "Restarter", "describe_exit"]


@dataclass(frozen=True)
class Backoff:
    """Pause before restart number ``failures`` in a row: ``first``, doubled each
    time up to ``cap``; a child that ran ``stable`` seconds starts the count again."""

    first: float = 1.0
    cap: float = 60.0
    stable: float = 30.0

    def delay(self, failures: int) -> float:
        if failures <= 1:
            return self.first
        return float(min(self.cap, self.first * 2 ** (failures - 1)))


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = str(-code)
        return f"killed by signal {-code} ({name})"
    return f"exited with status {code}"


@dataclass
class _Pending:
    due: float
    failures: int
    down_since: float


@dataclass
class Restarter:
    """Watches ``children`` (polled by the launcher's loop) and restarts them."""

    backoff: Backoff = field(default_factory=Backoff)
    clock: Callable[[], float] = time.monotonic
    say: Callable[[str], None] = lambda text: print(f"elemta: {text}", file=sys.stderr, flush=True)
    restarts: int = 0  # every restart so far, all children together
    _pending: dict[str, _Pending] = field(default_factory=dict)
    _failures: dict[str, int] = field(default_factory=dict)
    _recovering: dict[str, float] = field(default_factory=dict)  # name -> down since

    def poll(self, children: list[Child]) -> None:
        now = self.clock()
        for child in children:
            if child.name in self._pending:
                pending = self._pending[child.name]
                if now >= pending.due:
                    del self._pending[child.name]
                    self._restart(child, pending)
            elif child.proc is not None and child.proc.poll() is not None:
                self._exited(child, now)
            elif child.name in self._recovering and child.check_ready():
                down = now - self._recovering.pop(child.name)
                self.say(f"{child.name} is ready again ({down:.1f} s after it stopped)")

    def waiting(self) -> list[str]:
        """Children that stopped and are not started again yet."""
        return sorted(self._pending)

    def _exited(self, child: Child, now: float) -> None:
        assert child.proc is not None
        code = child.proc.returncode
        pid = child.proc.pid
        ran = now - child.started_at
        failures = 1 if ran >= self.backoff.stable else self._failures.get(child.name, 0) + 1
        self._failures[child.name] = failures
        delay = self.backoff.delay(failures)
        child.forget_pid()
        child.proc = None
        child.ready = False
        message = (
            f"{child.name} (pid {pid}) {describe_exit(code)} after {ran:.1f} s; "
            f"restarting in {delay:g} s"
        )
        if code > 0:
            tail = child.log_tail(10).replace("\n", "\n    ")
            message += f"; the end of {child.log_path}:\n    {tail}"
        self.say(message)
        down_since = self._recovering.get(child.name, now)
        self._pending[child.name] = _Pending(now + delay, failures, down_since)

    def _restart(self, child: Child, pending: _Pending) -> None:
        try:
            child.respawn()
        except Exception as exc:  # e.g. the executable vanished: try again later
            delay = self.backoff.delay(pending.failures + 1)
            self._failures[child.name] = pending.failures + 1
            self.say(f"{child.name} did not start ({exc}); trying again in {delay:g} s")
            self._pending[child.name] = _Pending(
                self.clock() + delay, pending.failures + 1, pending.down_since
            )
            return
        self.restarts += 1
        self._recovering[child.name] = pending.down_since
        pid = child.proc.pid if child.proc is not None else 0
        self.say(f"{child.name} restarted (pid {pid})")
