"""API keys: the token format, the stored record and the store in KV ``ELEMTA_API_KEYS``.

A key is shown once, when it is created: ``elemta_<key id>_<secret>``, where the
key id (12 hex digits) names the record and the secret is 32 random bytes in
base64url. The record keeps the SHA-256 of the secret, never the secret: with
256 bits of randomness a plain hash cannot be guessed back, and unlike a
password hash (bcrypt, scrypt) it costs nothing per request. Comparison is
constant-time.

A key has a role (see ``elemta.api.permissions``), a label, an optional expiry
(epoch seconds; 0 never) and, for the ``user`` role, the mail addresses whose
messages it may see. Revoking deletes the record: the next request with the key
is refused.

The api service uses the store; so does ``elemta key create --bootstrap``, which
writes the first admin key straight into NATS on a host that can reach it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from .jetstream import open_bucket
from .names import KEYS_BUCKET
from .records import build

__all__ = ["KEY_ID_PATTERN", "ROLES", "ApiKey", "KeyStore", "new_token", "parse_token"]

# Every role, most powerful first. What each may do: elemta.api.permissions.
ROLES = ("admin", "operator", "readonly", "user")

PREFIX = "elemta_"
KEY_ID_PATTERN = r"^[0-9a-f]{12}$"
_TOKEN = re.compile(r"^elemta_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_token() -> tuple[str, str, str]:
    """A fresh key: (key id, secret, the token the holder sends)."""
    key_id = secrets.token_hex(6)
    secret = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")
    return key_id, secret, f"{PREFIX}{key_id}_{secret}"


def parse_token(token: str) -> tuple[str, str] | None:
    """(key id, secret) of a well-formed token, else None."""
    m = _TOKEN.match(token.strip())
    return (m.group(1), m.group(2)) if m else None


@dataclass
class ApiKey:
    id: str
    label: str
    role: str
    created_at: float
    created_by: str = ""
    expires_at: float = 0.0
    addresses: list[str] = field(default_factory=list)
    secret_sha256: str = ""

    def expired(self, now: float) -> bool:
        return bool(self.expires_at) and now >= self.expires_at

    def public(self) -> dict[str, Any]:
        """What may be shown: everything but the hash."""
        record = asdict(self)
        record.pop("secret_sha256")
        return record

    def encode(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def decode(cls, data: bytes) -> ApiKey:
        return build(cls, json.loads(data))


class KeyStore:
    """The records in KV; ``verify`` reads the record each time, so a revocation
    takes effect on the next request in every api process."""

    def __init__(self, kv: KeyValue) -> None:
        self.kv = kv

    @classmethod
    async def open(cls, js: JetStreamContext) -> KeyStore:
        return cls(await open_bucket(js, KEYS_BUCKET, ttl=0))

    async def create(
        self,
        label: str,
        role: str,
        created_by: str,
        expires_at: float = 0.0,
        addresses: list[str] | None = None,
        now: float | None = None,
    ) -> tuple[ApiKey, str]:
        """Store a new key; returns the record and the token (shown once, never stored)."""
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}; one of {', '.join(ROLES)}")
        key_id, secret, token = new_token()
        key = ApiKey(
            id=key_id,
            label=label,
            role=role,
            created_at=time.time() if now is None else now,
            created_by=created_by,
            expires_at=expires_at,
            addresses=[a.lower() for a in addresses or []],
            secret_sha256=_digest(secret),
        )
        await self.kv.create(key_id, key.encode())
        return key, token

    async def get(self, key_id: str) -> ApiKey | None:
        if not re.match(KEY_ID_PATTERN, key_id):
            return None
        try:
            entry = await self.kv.get(key_id)
        except KeyNotFoundError:
            return None
        return ApiKey.decode(entry.value) if entry.value else None

    async def verify(self, token: str, now: float | None = None) -> ApiKey | None:
        """The key a token belongs to, when it is known, matches and has not expired."""
        parsed = parse_token(token)
        if parsed is None:
            return None
        key = await self.get(parsed[0])
        if key is None or not hmac.compare_digest(key.secret_sha256, _digest(parsed[1])):
            return None
        if key.expired(time.time() if now is None else now):
            return None
        return key

    async def list(self) -> list[ApiKey]:
        try:
            names = await self.kv.keys()
        except Exception:  # nats-py raises NoKeysError on an empty bucket
            return []
        keys = [await self.get(k) for k in sorted(names)]
        return [k for k in keys if k is not None]

    async def revoke(self, key_id: str) -> bool:
        """Delete a key; False when there is none by that id."""
        if await self.get(key_id) is None:
            return False
        await self.kv.purge(key_id)
        return True
