"""The SQL user store: SQLite (embedded default), PostgreSQL, MariaDB/MySQL.

SQLAlchemy Core speaks the three dialects (drivers: sqlite3, psycopg, PyMySQL);
Alembic brings the schema to the newest migration when the store opens, so an
upgrade of Elemta upgrades the schema of a running store. The drivers block, so
the policy service's calls run in a thread; the ``elemta user`` commands call the
blocking methods directly.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Iterable
from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import create_engine, delete, insert, select, update
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from .hashing import hash_password, verify_password
from .schema import addresses, roles, users
from .store import NoSuchUser, StoreUnavailable, User, UserExists, normalise_address

__all__ = ["SqlStore"]

MIGRATIONS = Path(__file__).parent / "migrations"


class SqlStore:
    read_only = False

    def __init__(self, url: str, scheme: str = "argon2") -> None:
        parsed = make_url(url)
        if parsed.get_backend_name() == "sqlite" and parsed.database:
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        self.engine: Engine = create_engine(parsed, pool_pre_ping=True)
        self.scheme = scheme

    def migrate(self) -> None:
        """Bring the schema to the newest migration (creating it on a new database)."""
        cfg = AlembicConfig()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        try:
            with self.engine.begin() as conn:
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")
        except SQLAlchemyError as exc:
            raise StoreUnavailable(f"cannot migrate the user store: {exc}") from exc

    async def start(self) -> None:
        await asyncio.to_thread(self.migrate)

    async def close(self) -> None:
        await asyncio.to_thread(self.engine.dispose)

    # -- reading ---------------------------------------------------------------

    def _load(self, conn: Connection, login: str) -> User | None:
        row = conn.execute(
            select(users.c.id, users.c.login, users.c.password_hash, users.c.disabled).where(
                users.c.login == normalise_address(login)
            )
        ).first()
        if row is None:
            return None
        user_roles = conn.execute(
            select(roles.c.role).where(roles.c.user_id == row.id).order_by(roles.c.role)
        ).scalars()
        owned = conn.execute(
            select(addresses.c.address)
            .where(addresses.c.user_id == row.id)
            .order_by(addresses.c.address)
        ).scalars()
        return User(
            login=row.login,
            roles=tuple(user_roles),
            addresses=tuple(owned),
            disabled=bool(row.disabled),
            password_hash=row.password_hash,
        )

    def get_sync(self, login: str) -> User | None:
        try:
            with self.engine.connect() as conn:
                return self._load(conn, login)
        except SQLAlchemyError as exc:
            raise StoreUnavailable(f"user store: {exc.__class__.__name__}") from exc

    async def get(self, login: str) -> User | None:
        return await asyncio.to_thread(self.get_sync, login)

    def authenticate_sync(self, login: str, password: str) -> User | None:
        user = self.get_sync(login)
        if user is None or user.disabled or not verify_password(password, user.password_hash):
            return None
        return user

    async def authenticate(self, login: str, password: str) -> User | None:
        return await asyncio.to_thread(self.authenticate_sync, login, password)

    def list(self) -> list[User]:
        with self.engine.connect() as conn:
            logins = conn.execute(select(users.c.login).order_by(users.c.login)).scalars().all()
            found = [self._load(conn, login) for login in logins]
        return [u for u in found if u is not None]

    # -- managing (elemta user ...) ----------------------------------------------

    def _user_id(self, conn: Connection, login: str) -> int:
        uid = conn.execute(
            select(users.c.id).where(users.c.login == normalise_address(login))
        ).scalar()
        if uid is None:
            raise NoSuchUser(login)
        return int(uid)

    def add(
        self,
        login: str,
        password: str | None = None,
        *,
        password_hash: str | None = None,
        user_roles: Iterable[str] = ("user",),
        sender_addresses: Iterable[str] | None = None,
    ) -> User:
        """A new user; its login is also its first address when it looks like one.
        ``password_hash`` takes an imported hash as it is."""
        login = normalise_address(login)
        stored = password_hash or hash_password(password or "", self.scheme)
        owned = list(sender_addresses) if sender_addresses is not None else []
        if sender_addresses is None and "@" in login:
            owned = [login]
        try:
            with self.engine.begin() as conn:
                key = conn.execute(
                    insert(users).values(
                        login=login,
                        password_hash=stored,
                        disabled=False,
                        created_at=dt.datetime.now(dt.UTC),
                    )
                ).inserted_primary_key
                assert key is not None
                uid = key[0]
                for role in dict.fromkeys(user_roles):
                    conn.execute(insert(roles).values(user_id=uid, role=role))
                for address in dict.fromkeys(normalise_address(a) for a in owned):
                    conn.execute(insert(addresses).values(user_id=uid, address=address))
        except IntegrityError as exc:
            raise UserExists(login) from exc
        user = self.get_sync(login)
        assert user is not None
        return user

    def passwd(self, login: str, password: str) -> None:
        with self.engine.begin() as conn:
            uid = self._user_id(conn, login)
            conn.execute(
                update(users)
                .where(users.c.id == uid)
                .values(password_hash=hash_password(password, self.scheme))
            )

    def remove(self, login: str) -> None:
        with self.engine.begin() as conn:
            uid = self._user_id(conn, login)
            # children first: SQLite enforces no foreign keys unless asked
            conn.execute(delete(addresses).where(addresses.c.user_id == uid))
            conn.execute(delete(roles).where(roles.c.user_id == uid))
            conn.execute(delete(users).where(users.c.id == uid))

    def add_address(self, login: str, address: str) -> None:
        try:
            with self.engine.begin() as conn:
                uid = self._user_id(conn, login)
                conn.execute(
                    insert(addresses).values(user_id=uid, address=normalise_address(address))
                )
        except IntegrityError as exc:
            raise UserExists(f"{address} belongs to a user already") from exc

    def remove_address(self, login: str, address: str) -> None:
        with self.engine.begin() as conn:
            uid = self._user_id(conn, login)
            gone = conn.execute(
                delete(addresses).where(
                    addresses.c.user_id == uid, addresses.c.address == normalise_address(address)
                )
            ).rowcount
        if not gone:
            raise NoSuchUser(f"{login} has no address {address}")
