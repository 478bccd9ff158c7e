"""SMTP clients for crash tests: each message carries a unique token, and a message
that is not accepted is sent again, as a sending MTA keeps it queued and retries.

``sessions`` threads share the tokens. Each keeps one SMTP connection open while
it works and sends its next token as a new transaction; any trouble (a ``4xx``, a
refused or broken connection, a timeout) closes it, pauses ``retry_pause``
seconds and sends the same token again. A token counts as **accepted** at the
first ``250`` to its DATA: from then on Elemta owes its delivery. A reply lost
with a broken connection leaves the token unaccepted and it is sent again; a
copy that arrives then is the duplicate every MTA makes in that case, and the
counting sink sees it.
"""

from __future__ import annotations

import smtplib
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from .countingsink import TOKEN_HEADER

__all__ = ["TokenLoad"]


@dataclass
class _Stats:
    accepted: dict[str, float] = field(default_factory=dict)  # token -> time of its 250
    rejected: dict[str, str] = field(default_factory=dict)  # 5xx: never retried
    replies: Counter[str] = field(default_factory=Counter)  # "451 4.3.0", "refused", ...
    # token -> how its attempts that sent the whole message ended without a 250
    # ("broken", "451 4.3.0"): each may have been stored all the same
    unsure: dict[str, list[str]] = field(default_factory=dict)


class TokenLoad:
    """Send ``count`` messages (tokens ``<prefix>-<n>``) to ``port`` to ``recipient``."""

    def __init__(
        self,
        port: int,
        count: int,
        *,
        prefix: str = "t",
        sessions: int = 4,
        recipient: str = "r@relay.test",
        sender: str = "load@client.test",
        retry_pause: float = 0.5,
        timeout: float = 30.0,
        rate: float = 0.0,  # messages per second over all sessions; 0: as fast as accepted
    ) -> None:
        self.port = port
        self.tokens = [f"{prefix}-{n:06d}" for n in range(count)]
        self.sessions = sessions
        self.recipient = recipient
        self.sender = sender
        self.retry_pause = retry_pause
        self.timeout = timeout
        self.rate = rate
        self.stats = _Stats()
        self._next = 0
        self._limit = count  # tokens from this index on wait for allow()
        self._lock = threading.Lock()
        self._allowed = threading.Condition(self._lock)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._started = 0.0

    # -- what the tests read ------------------------------------------------------

    @property
    def accepted(self) -> set[str]:
        with self._lock:
            return set(self.stats.accepted)

    @property
    def accepted_count(self) -> int:
        with self._lock:
            return len(self.stats.accepted)

    @property
    def done(self) -> bool:
        return all(not t.is_alive() for t in self._threads)

    def replies(self) -> Counter[str]:
        with self._lock:
            return Counter(self.stats.replies)

    # -- running ---------------------------------------------------------------

    def start(self) -> TokenLoad:
        self._started = time.monotonic()
        for i in range(self.sessions):
            t = threading.Thread(target=self._session, name=f"load-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def wait(self, timeout: float) -> bool:
        """Until every token is accepted (or refused for good); False at the deadline."""
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        return self.done

    def wait_accepted(self, n: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.accepted_count < n:
            if time.monotonic() > deadline or self.done:
                return self.accepted_count >= n
            time.sleep(0.05)
        return True

    def allow(self, n: int) -> None:
        """Send only the first ``n`` tokens until allowed more (a chaos run
        spreads its kills over the load this way); ``n`` may only grow."""
        with self._allowed:
            self._limit = min(len(self.tokens), max(0, n))
            self._allowed.notify_all()

    def stop(self) -> None:
        self._stop.set()
        with self._allowed:
            self._allowed.notify_all()
        for t in self._threads:
            t.join(self.timeout + 5)

    def _take(self) -> str | None:
        with self._allowed:
            while self._next >= self._limit and self._next < len(self.tokens):
                if self._stop.is_set():
                    return None
                self._allowed.wait(0.5)
            if self._next >= len(self.tokens):
                return None
            n = self._next
            token = self.tokens[n]
            self._next += 1
        if self.rate > 0:  # pace: token n is not sent before n / rate seconds
            due = self._started + n / self.rate
            delay = due - time.monotonic()
            if delay > 0:
                self._stop.wait(delay)
        return token

    def _note(self, reply: str) -> None:
        with self._lock:
            self.stats.replies[reply] += 1

    def _message(self, token: str) -> bytes:
        return (
            f"From: {self.sender}\r\nTo: {self.recipient}\r\nSubject: {token}\r\n"
            f"Message-ID: <{token}@client.test>\r\n{TOKEN_HEADER}: {token}\r\n\r\n"
            f"message {token}\r\n"
        ).encode()

    def _session(self) -> None:
        client: smtplib.SMTP | None = None
        token = self._take()
        while token is not None and not self._stop.is_set():
            sent: list[bool] = []  # the whole message went out in this attempt
            try:
                if client is None:
                    client = smtplib.SMTP(
                        "127.0.0.1", self.port, local_hostname="client.test", timeout=self.timeout
                    )
                    client.ehlo()
                code, text = self._send(client, token, sent)
            except (OSError, smtplib.SMTPException) as exc:
                self._note("refused" if isinstance(exc, ConnectionRefusedError) else "broken")
                if sent:
                    self._unsure(token, "broken")
                client = _close(client)
                self._stop.wait(self.retry_pause)
                continue
            self._note(f"{code} {text.split(' ', 1)[0]}" if code >= 400 else str(code))
            if code == 250:
                with self._lock:
                    self.stats.accepted.setdefault(token, time.monotonic())
                token = self._take()
            elif code >= 500:
                with self._lock:
                    self.stats.rejected[token] = f"{code} {text}"
                token = self._take()
            else:
                if sent:
                    self._unsure(token, f"{code} {text.split(' ', 1)[0]}")
                client = _close(client)
                self._stop.wait(self.retry_pause)
        _close(client)

    def _unsure(self, token: str, how: str) -> None:
        with self._lock:
            self.stats.unsure.setdefault(token, []).append(how)

    def _send(self, client: smtplib.SMTP, token: str, sent: list[bool]) -> tuple[int, str]:
        for cmd in (f"MAIL FROM:<{self.sender}>", f"RCPT TO:<{self.recipient}>"):
            code, text = client.docmd(cmd)
            if code >= 400:
                client.docmd("RSET")
                return code, text.decode(errors="replace")
        code, text = client.docmd("DATA")
        if code != 354:
            client.docmd("RSET")
            return code, text.decode(errors="replace")
        data = self._message(token)
        client.send(data + b".\r\n")
        sent.append(True)
        code, text = client.getreply()
        return code, text.decode(errors="replace")


def _close(client: smtplib.SMTP | None) -> None:
    if client is not None:
        try:
            client.close()
        except OSError:
            pass
    return None
