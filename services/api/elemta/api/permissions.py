"""Roles and what each may do: the one table every endpoint is checked against.

Every ``/api/v1`` route names one permission (``x-permission`` in the OpenAPI
document); the middleware in :mod:`.auth` refuses a request whose role is not
listed for it, before the handler runs. A route that names none is refused to
everyone: forgetting the permission closes a route, never opens it.

``docs/api.md`` shows this table; a test keeps the two the same.
"""

from __future__ import annotations

from elemta.common.apikeys import ROLES

__all__ = ["PERMISSIONS", "ROLES", "allowed"]

_ALL = frozenset(ROLES)
_STAFF = frozenset({"admin", "operator", "readonly"})
_CHANGERS = frozenset({"admin", "operator"})
_ADMIN = frozenset({"admin"})

PERMISSIONS: dict[str, frozenset[str]] = {
    # Who am I: every role.
    "self.read": _ALL,
    # Messages: list, search, detail, history. A `user` sees only messages whose
    # sender or a recipient is one of its addresses.
    "queue.read": _ALL,
    # Queue-wide counts, qshape and stream statistics.
    "queue.summary": _STAFF,
    # The raw message (headers and body).
    "queue.raw": _ADMIN,
    # hold, release, retry now, bounce, delete; one message or in bulk.
    "queue.act": _CHANGERS,
    # Destination suspensions.
    "suspensions.read": _STAFF,
    "suspensions.write": _CHANGERS,
    # API keys.
    "keys.read": _ADMIN,
    "keys.write": _ADMIN,
    # The audit log.
    "audit.read": _ADMIN,
    # The effective configuration (secrets redacted) and the services' health.
    "system.read": _STAFF,
}


def allowed(role: str, permission: str) -> bool:
    return role in PERMISSIONS.get(permission, frozenset())
