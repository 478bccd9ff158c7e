"""Console sessions: the cookie a browser holds after logging in, and the login limit.

A session is 32 random bytes in a cookie (``HttpOnly``, ``SameSite=Strict``,
``Secure`` when the API is served over TLS); KV ``ELEMTA_API_SESSIONS`` keeps,
under the SHA-256 of that value, who logged in, the role, the CSRF token and the
end. Keeping them in KV rather than in the process lets any api replica answer a
browser, and a logout or the bucket's TTL ends a session everywhere.

Why a CSRF token on top of ``SameSite=Strict``: older browsers and some proxies
do not honour SameSite; a write through a session must also carry the token in
the ``X-CSRF-Token`` header, which another site's page can neither read nor set.

A session opened with an API key follows the key: when the key is revoked or
expires, the session ends with it (checked on each request).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from elemta.common.jetstream import open_bucket
from elemta.common.names import SESSIONS_BUCKET
from elemta.common.records import build

__all__ = [
    "COOKIE",
    "CSRF_HEADER",
    "LOGIN_WINDOW",
    "LoginLimiter",
    "Session",
    "SessionStore",
    "csrf_ok",
]

COOKIE = "elemta_session"
CSRF_HEADER = "X-CSRF-Token"
LOGIN_WINDOW = 300.0


def _token() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")


def _name(cookie: str) -> str:
    """The KV key of a session: the hash of its cookie, so that reading the bucket
    does not hand out sessions."""
    return hashlib.sha256(cookie.encode()).hexdigest()


@dataclass
class Session:
    kind: str  # "key" (logged in with an API key) or "user" (user name and password)
    id: str  # the key id, or the login
    label: str
    role: str
    csrf: str
    created_at: float
    expires_at: float
    addresses: list[str] = field(default_factory=list)

    def encode(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def decode(cls, data: bytes) -> Session:
        return build(cls, json.loads(data))


def csrf_ok(session: Session, header: str | None) -> bool:
    return bool(header) and hmac.compare_digest(session.csrf, header or "")


class SessionStore:
    def __init__(self, kv: KeyValue, lifetime: float) -> None:
        self.kv = kv
        self.lifetime = lifetime

    @classmethod
    async def open(cls, js: JetStreamContext, lifetime: float) -> SessionStore:
        return cls(await open_bucket(js, SESSIONS_BUCKET, ttl=lifetime), lifetime)

    async def create(
        self,
        kind: str,
        id: str,
        label: str,
        role: str,
        addresses: list[str],
        now: float | None = None,
        ends: float = 0.0,
    ) -> tuple[Session, str]:
        """A new session; returns it and the cookie value (not stored)."""
        now = time.time() if now is None else now
        end = now + self.lifetime
        if ends:
            end = min(end, ends)
        session = Session(kind, id, label, role, _token(), now, end, list(addresses))
        cookie = _token()
        await self.kv.put(_name(cookie), session.encode())
        return session, cookie

    async def get(self, cookie: str, now: float | None = None) -> Session | None:
        if not cookie or len(cookie) > 100:
            return None
        try:
            entry = await self.kv.get(_name(cookie))
        except KeyNotFoundError:
            return None
        if not entry.value:
            return None
        session = Session.decode(entry.value)
        if (time.time() if now is None else now) >= session.expires_at:
            return None
        return session

    async def end(self, cookie: str) -> None:
        if cookie and len(cookie) <= 100:
            await self.kv.purge(_name(cookie))


class LoginLimiter:
    """Failed logins per client address in a sliding window; past ``limit`` the
    address is refused (429) until its oldest failure leaves the window. In the
    process: a guesser spread over replicas gets ``limit`` tries per replica, and
    the policy service's lockout bounds password guessing across all of them."""

    def __init__(
        self, limit: int, window: float = LOGIN_WINDOW, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limit = limit
        self.window = window
        self.clock = clock
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, client: str) -> deque[float]:
        now = self.clock()
        q = self._failures.get(client)
        if q is None:
            return deque()
        while q and q[0] <= now - self.window:
            q.popleft()
        if not q:
            del self._failures[client]
        return q

    def retry_after(self, client: str) -> float:
        """Seconds until ``client`` may try again; 0: it may now."""
        q = self._recent(client)
        if len(q) < self.limit:
            return 0.0
        return max(1.0, q[0] + self.window - self.clock())

    def failed(self, client: str) -> None:
        self._recent(client)
        self._failures.setdefault(client, deque()).append(self.clock())
        if len(self._failures) > 100_000:  # bound memory under a flood of addresses
            self._failures.pop(next(iter(self._failures)))

    def succeeded(self, client: str) -> None:
        self._failures.pop(client, None)
