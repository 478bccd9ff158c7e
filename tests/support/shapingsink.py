"""A sink that watches how it is used: connections open at once, and when each message came.

For the shaping tests: ``peak`` is the largest number of connections that were
open at the same moment, ``mail_times`` the arrival time of every MAIL FROM
(the start of each transaction), so a test can count messages in any second.
"""

from __future__ import annotations

import asyncio
import threading
import time

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP

from .smtpsink import SmtpSink, _Handler

__all__ = ["ShapingSink", "most_in_any_second"]


def most_in_any_second(times: list[float], window: float = 1.0) -> int:
    """The largest number of ``times`` inside any interval ``[t, t + window)``."""
    ordered = sorted(times)
    best = 0
    j = 0
    for i, start in enumerate(ordered):
        while j < len(ordered) and ordered[j] < start + window:
            j += 1
        best = max(best, j - i)
    return best


class _WatchedSMTP(SMTP):
    sink: ShapingSink

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.sink._opened()
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        self.sink._closed()
        super().connection_lost(error)

    async def smtp_MAIL(self, arg: str | None) -> None:  # noqa: N802
        with self.sink._lock:
            self.sink.mail_times.append(time.monotonic())
        await super().smtp_MAIL(arg)


class _WatchedController(Controller):
    sink: ShapingSink

    def factory(self) -> SMTP:
        smtp = _WatchedSMTP(self.handler, hostname="sink.test", enable_SMTPUTF8=True)
        smtp.sink = self.sink
        return smtp


class ShapingSink(SmtpSink):
    def __init__(self) -> None:
        super().__init__()
        self.open = 0
        self.peak = 0
        self.connections = 0
        self.mail_times: list[float] = []
        self._lock = threading.Lock()
        self.controller = _WatchedController(
            _Handler(self), hostname="127.0.0.1", port=self.port, server_hostname="sink.test"
        )
        self.controller.sink = self

    def _opened(self) -> None:
        with self._lock:
            self.open += 1
            self.connections += 1
            self.peak = max(self.peak, self.open)

    def _closed(self) -> None:
        with self._lock:
            self.open -= 1
