"""The user store: what every backend offers, and which one the configuration picks.

A user has a login, a password hash, roles (``user``, ``admin`` ...: the api's
console roles live here too) and the addresses it may use as envelope sender
(``alice@example.org``, or ``@example.org`` for a whole domain) — Postfix's
``smtpd_sender_login_maps`` in one table. The login is often the first address,
but need not be.

Errors: :class:`StoreUnavailable` is temporary (the database or directory cannot
be reached: the client is told to try later); :class:`UserExists`,
:class:`NoSuchUser` and :class:`ReadOnlyStore` are the caller's mistakes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from elemta.common.config import Config

__all__ = [
    "NoSuchUser",
    "ReadOnlyStore",
    "StoreError",
    "StoreUnavailable",
    "User",
    "UserExists",
    "UserStore",
    "normalise_address",
    "open_store",
    "sqlite_url",
]


class StoreError(Exception):
    """Something the store cannot do."""


class StoreUnavailable(StoreError):
    """The database or directory cannot be reached or answered with an error: temporary."""


class UserExists(StoreError):
    """The login or address belongs to a user already."""


class NoSuchUser(StoreError):
    """No user has this login."""


class ReadOnlyStore(StoreError):
    """The store is managed elsewhere (LDAP)."""


@dataclass(frozen=True)
class User:
    login: str
    roles: tuple[str, ...] = ("user",)
    addresses: tuple[str, ...] = ()
    disabled: bool = False
    password_hash: str = field(default="", repr=False)


def normalise_address(address: str) -> str:
    """Addresses compare case-insensitively (RFC 5321 allows case in the local part,
    but no mailbox provider uses it); ``@domain`` entries keep their ``@``."""
    return address.strip().lower()


class UserStore(Protocol):
    """What the policy service needs of a store; SQL stores also manage users."""

    read_only: bool

    async def authenticate(self, login: str, password: str) -> User | None:
        """The user when ``password`` is right and the user is enabled, else None;
        :class:`StoreUnavailable` when the store cannot say."""
        ...

    async def get(self, login: str) -> User | None: ...

    async def start(self) -> None:
        """Ready the store (SQL: migrate the schema)."""
        ...

    async def close(self) -> None: ...


def sqlite_url(cfg: Config) -> str:
    return f"sqlite:///{Path(cfg.server.state_dir).resolve() / 'users.db'}"


def open_store(cfg: Config) -> UserStore:
    """The store ``[users]`` names; SQL schemas are brought up to date first."""
    u = cfg.users
    if u.store == "ldap":
        from .ldapstore import LdapStore

        return LdapStore(u)
    from .sqlstore import SqlStore

    url = u.url.get_secret_value() or (sqlite_url(cfg) if u.store == "sqlite" else "")
    if not url:
        raise StoreError("users.url is required with users.store = sql")
    return SqlStore(url, scheme=u.password_scheme)
