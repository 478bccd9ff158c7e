"""The tables of the SQL user stores (SQLite, PostgreSQL, MariaDB/MySQL).

The schema is changed only by migrations (``migrations/versions``, Alembic); these
table objects are what the queries use and must match the newest migration.
"""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
)

__all__ = ["addresses", "metadata", "roles", "users"]

metadata = MetaData()

users = Table(
    "elemta_users",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("login", String(320), nullable=False, unique=True),
    Column("password_hash", String(255), nullable=False),
    Column("disabled", Boolean, nullable=False, default=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

# Roles of a user: "user" for mail, "admin"/"operator"/... for the console.
roles = Table(
    "elemta_user_roles",
    metadata,
    Column("user_id", Integer, ForeignKey("elemta_users.id", ondelete="CASCADE"), primary_key=True),
    Column("role", String(64), primary_key=True),
)

# Envelope senders a user may use: an address, or "@domain" for the whole domain.
addresses = Table(
    "elemta_user_addresses",
    metadata,
    Column("address", String(320), primary_key=True),
    Column(
        "user_id",
        Integer,
        ForeignKey("elemta_users.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
)
