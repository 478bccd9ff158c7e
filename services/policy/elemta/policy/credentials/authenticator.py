"""One login checked: lockout first, then the store; failures counted.

Failed logins are counted per client address and per login in the JetStream KV
bucket ``ELEMTA_AUTH_FAILURES`` (keys ``ip.<hash>`` and ``login.<hash>``; hashed
because KV keys allow neither ``@`` nor ``:``), raised with optimistic concurrency
as the rate limiter's counters are. Every policy replica, and so every ingress
replica asking any of them, sees the same counts. The bucket's TTL is
``users.lockout_window``: a counter disappears that long after its last failure,
which ends the lockout.

At ``users.lockout_failures`` on either key further attempts are refused without
asking the store (so a locked-out attacker learns nothing, and the store is
spared). A success clears the login's counter but not the address's: one valid
account must not reset a password-guessing client.

When the KV cannot be reached the store is still asked (logins keep working) and
the failure is logged: a lockout is a brake, not a gate.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from .store import StoreUnavailable, User, UserStore, normalise_address

__all__ = ["AuthOutcome", "AuthResult", "Authenticator", "FailureCounter"]

log = logging.getLogger("elemta.policy.credentials")

MAX_ATTEMPTS = 20


class AuthResult(enum.Enum):
    OK = "ok"
    INVALID = "invalid"
    LOCKED = "locked"
    UNAVAILABLE = "unavailable"


@dataclass(frozen=True)
class AuthOutcome:
    result: AuthResult
    user: User | None = None
    failures: int = 0
    retry_after: int = 0


def _key(kind: str, subject: str) -> str:
    return f"{kind}.{hashlib.sha256(subject.encode('utf-8', 'surrogateescape')).hexdigest()[:32]}"


class FailureCounter:
    """Failures per key in a KV bucket: ``{"n": count, "last": epoch seconds}``."""

    def __init__(self, kv: KeyValue, clock: Callable[[], float] = time.time) -> None:
        self.kv = kv
        self.clock = clock

    async def read(self, key: str) -> tuple[int, float]:
        try:
            entry = await self.kv.get(key)
        except KeyNotFoundError:
            return 0, 0.0
        return self._decode(entry.value)

    @staticmethod
    def _decode(value: bytes | None) -> tuple[int, float]:
        try:
            data = json.loads(value or b"{}")
            return int(data.get("n", 0)), float(data.get("last", 0.0))
        except (ValueError, AttributeError):
            return 0, 0.0

    async def add(self, key: str) -> int:
        payload = lambda n: json.dumps({"n": n, "last": self.clock()}).encode()  # noqa: E731
        for _ in range(MAX_ATTEMPTS):
            try:
                entry = await self.kv.get(key)
            except KeyNotFoundError:
                try:
                    await self.kv.create(key, payload(1))
                except KeyWrongLastSequenceError:
                    continue
                return 1
            n = self._decode(entry.value)[0] + 1
            try:
                await self.kv.update(key, payload(n), last=entry.revision)
            except KeyWrongLastSequenceError:
                continue
            return n
        raise RuntimeError(f"counter {key} kept changing")

    async def clear(self, key: str) -> None:
        try:
            await self.kv.delete(key)
        except KeyNotFoundError:
            pass


class Authenticator:
    def __init__(
        self,
        store: UserStore,
        failures: FailureCounter | None,
        limit: int = 5,
        window: float = 900.0,
        timeout: float = 2.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.failures = failures
        self.limit = limit
        self.window = window
        self.timeout = timeout
        self.clock = clock

    def _keys(self, login: str, client_ip: str) -> list[str]:
        keys = [_key("login", normalise_address(login))]
        if client_ip:
            keys.append(_key("ip", client_ip))
        return keys

    async def _counts(self, keys: list[str]) -> list[tuple[int, float]]:
        if self.failures is None:
            return []
        counter = self.failures
        try:
            return await asyncio.wait_for(
                asyncio.gather(*(counter.read(k) for k in keys)), self.timeout
            )
        except Exception as exc:  # see the module docstring: a brake, not a gate
            log.warning("login failure counts unavailable: %r", exc)
            return []

    async def _count_failure(self, keys: list[str]) -> int:
        if self.failures is None:
            return 0
        counter = self.failures
        try:
            counts = await asyncio.wait_for(
                asyncio.gather(*(counter.add(k) for k in keys)), self.timeout
            )
        except Exception as exc:
            log.warning("cannot count a failed login: %r", exc)
            return 0
        return max(counts)

    async def authenticate(
        self, login: str, password: str, client_ip: str = "", service: str = ""
    ) -> AuthOutcome:
        keys = self._keys(login, client_ip)
        counts = await self._counts(keys)
        worst = max((n for n, _ in counts), default=0)
        if worst >= self.limit:
            last = max(t for n, t in counts if n >= self.limit)
            retry = max(1, int(self.window - (self.clock() - last)))
            self._log_failure(service, client_ip, login, "locked")
            return AuthOutcome(AuthResult.LOCKED, failures=worst, retry_after=retry)
        try:
            user = await self.store.authenticate(login, password)
        except StoreUnavailable as exc:
            log.error("user store unavailable: %s", exc)
            return AuthOutcome(AuthResult.UNAVAILABLE, failures=worst)
        if user is None:
            n = await self._count_failure(keys)
            self._log_failure(service, client_ip, login, "invalid")
            return AuthOutcome(AuthResult.INVALID, failures=n)
        if self.failures is not None and counts and counts[0][0]:
            try:
                await asyncio.wait_for(self.failures.clear(keys[0]), self.timeout)
            except Exception as exc:
                log.warning("cannot clear login failures: %r", exc)
        return AuthOutcome(AuthResult.OK, user=user)

    @staticmethod
    def _log_failure(service: str, client_ip: str, login: str, reason: str) -> None:
        # One line, fixed order, for fail2ban: failregex = client=<HOST> login=
        safe = login.replace(" ", "_").replace("\n", "_")[:320]
        log.warning(
            "authentication failed: service=%s client=%s login=%s reason=%s",
            service or "-",
            client_ip or "-",
            safe,
            reason,
        )
