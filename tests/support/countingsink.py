"""The final destination of crash tests: an SMTP server that counts deliveries per
token.

Every test message carries a unique token in its ``X-Elemta-Token`` header; the
sink answers ``250`` to everything and counts how often each token arrived, so a
message delivered twice (by a retry after a crash, or a ``451`` that was stored
after all) shows up as a count of 2. It keeps no bodies: ten thousand messages
cost a dictionary.

Each arrival is also kept with the queue id Elemta gave the copy (the ``id`` of
its first ``Received:`` header), its time and its connection: two copies with one
queue id were delivered twice by Elemta, two queue ids mean the client sent the
message twice (:meth:`CountingSink.arrivals`).

It also notes the tokens a sender may not have heard about: the last message of a
connection that ended without ``QUIT`` (``cut``). When a delivery process is
killed between this sink's ``250`` and its stored report, the message it carried
is such a token; a token it had finished before is not (its session waited, idle,
for the next message, and the queue's next one carries another token).
"""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from dataclasses import dataclass

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import MISSING, SMTP, Envelope, Session

from .dnsserver import free_port

__all__ = ["TOKEN_HEADER", "Arrival", "CountingSink"]

TOKEN_HEADER = "X-Elemta-Token"
_TOKEN = re.compile(rb"^" + TOKEN_HEADER.encode() + rb": *([A-Za-z0-9._-]+)\r?$", re.M | re.I)
_QUEUE_ID = re.compile(
    rb"^Received:[^\r\n]*(?:\r?\n[ \t][^\r\n]*)*? id ([A-Za-z0-9._-]+)", re.M | re.I
)


@dataclass(frozen=True)
class Arrival:
    """One copy of a token: Elemta's queue id, when, on which connection."""

    queue_id: str
    at: float  # epoch seconds
    connection: int  # numbered in the order the sink accepted them


class _Handler:
    def __init__(self, sink: CountingSink) -> None:
        self.sink = sink

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        header_end = content.find(b"\r\n\r\n")
        found = _TOKEN.search(content, 0, header_end if header_end >= 0 else len(content))
        token = found.group(1).decode() if found else ""
        qid = _QUEUE_ID.search(content, 0, header_end if header_end >= 0 else len(content))
        self.sink._arrived(token, qid.group(1).decode() if qid else "", id(session))
        self.sink._last[id(session)] = token
        return "250 2.0.0 OK: counted"

    async def handle_QUIT(self, server: SMTP, session: Session, envelope: Envelope) -> object:
        self.sink._last.pop(id(session), None)  # a goodbye: the sender heard every reply
        return MISSING


class _Smtp(SMTP):
    """Tells the sink when a connection ends, so that it knows which ended without QUIT."""

    def connection_lost(self, error: Exception | None) -> None:
        handler = self.event_handler
        if isinstance(handler, _Handler) and self.session is not None:
            with handler.sink._cond:
                handler.sink._connections.pop(id(self.session), None)
            token = handler.sink._last.pop(id(self.session), None)
            if token:
                handler.sink._cut(token)
        super().connection_lost(error)


class _Controller(Controller):
    def factory(self) -> SMTP:
        return _Smtp(self.handler, **self.SMTP_kwargs)


class CountingSink:
    """An SMTP sink on ``127.0.0.1:<port>`` counting deliveries per token."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.counts: Counter[str] = Counter()
        self.untokened = 0  # messages without a token (bounces, reports)
        # tokens that were the last message of a connection closed without QUIT
        self.cut: Counter[str] = Counter()
        self._last: dict[int, str] = {}  # id(session) -> its last token
        self._arrivals: dict[str, list[Arrival]] = {}
        self._connections: dict[int, int] = {}  # id(session) -> its number, while open
        self._serial = 0
        self._cond = threading.Condition()
        self.controller = _Controller(
            _Handler(self),
            hostname="127.0.0.1",
            port=self.port,
            server_hostname="sink.test",
            data_size_limit=64 * 1024 * 1024,
        )

    def _arrived(self, token: str, queue_id: str = "", session: int = 0) -> None:
        with self._cond:
            if token:
                self.counts[token] += 1
                if session not in self._connections:
                    self._serial += 1
                    self._connections[session] = self._serial
                self._arrivals.setdefault(token, []).append(
                    Arrival(queue_id, time.time(), self._connections[session])
                )
            else:
                self.untokened += 1
            self._cond.notify_all()

    def _cut(self, token: str) -> None:
        with self._cond:
            self.cut[token] += 1

    def arrivals(self, token: str) -> list[Arrival]:
        """Every copy of ``token`` that arrived, in order."""
        with self._cond:
            return list(self._arrivals.get(token, ()))

    def cut_tokens(self) -> set[str]:
        with self._cond:
            return set(self.cut)

    def start(self) -> CountingSink:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()

    @property
    def deliveries(self) -> int:
        with self._cond:
            return sum(self.counts.values())

    def snapshot(self) -> Counter[str]:
        with self._cond:
            return Counter(self.counts)

    def missing(self, tokens: set[str]) -> set[str]:
        with self._cond:
            return {t for t in tokens if not self.counts.get(t)}

    def wait_for(self, tokens: set[str], timeout: float) -> set[str]:
        """Until every token arrived at least once; returns those still missing."""
        deadline = time.monotonic() + timeout
        missing = set(tokens)
        while True:
            with self._cond:
                missing = {t for t in missing if not self.counts.get(t)}
                left = deadline - time.monotonic()
                if not missing or left <= 0:
                    return missing
                # woken by arrivals, but looking at most five times a second
                self._cond.wait(min(left, 1.0))
            time.sleep(0.2)
