"""Who is asking, and may they: authentication and the permission check for ``/api/v1``.

One middleware does both, before any handler, parameter parsing or body
reading: a request without credentials is answered ``401`` (with
``WWW-Authenticate: Bearer``), one whose role lacks the route's permission
(:mod:`.permissions`) ``403``. Doing it ahead of FastAPI's own parsing means bad
input from someone unauthenticated learns nothing about the input, only that
credentials are missing.

Credentials: an API key as ``Authorization: Bearer elemta_<id>_<secret>``
(:mod:`elemta.common.apikeys`), or a console session cookie
(:mod:`.sessions`, opened by ``POST /console/session``). A write through a
session must carry its CSRF token in ``X-CSRF-Token``; a request with both
kinds of credentials is judged by the ``Authorization`` header alone.

Public paths: the OpenAPI document and its page, the console's files and
login (outside ``/api/``) and the health probes; everything else under
``/api/`` needs credentials.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import nats.errors
from fastapi import Request
from starlette.responses import Response
from starlette.routing import Match

from elemta.common.apikeys import ApiKey, parse_token

from .backend import Backend, Unavailable
from .permissions import allowed
from .problems import problem_response
from .sessions import COOKIE, CSRF_HEADER, Session, csrf_ok

__all__ = [
    "PUBLIC_API_PATHS",
    "Principal",
    "auth_middleware",
    "current",
    "route_permission",
    "session_of",
]

log = logging.getLogger(__name__)

PUBLIC_API_PATHS = frozenset({"/api/v1/openapi.json", "/api/v1/docs"})
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="elemta"'}


@dataclass(frozen=True)
class Principal:
    """The caller: an API key, or a console session opened with a key or a password."""

    kind: str  # "key" or "user"
    id: str
    label: str
    role: str
    addresses: tuple[str, ...] = field(default_factory=tuple)

    @classmethod
    def from_key(cls, key: ApiKey) -> Principal:
        return cls("key", key.id, key.label, key.role, tuple(a.lower() for a in key.addresses))

    @classmethod
    def from_session(cls, s: Session) -> Principal:
        return cls(s.kind, s.id, s.label, s.role, tuple(a.lower() for a in s.addresses))

    def actor(self) -> dict[str, Any]:
        """How the audit log names the caller."""
        return {"kind": self.kind, "id": self.id, "label": self.label, "role": self.role}

    @property
    def restricted(self) -> bool:
        """True for a ``user``: it sees only mail of its own addresses."""
        return self.role == "user"

    def sees(self, addresses: Iterable[str]) -> bool:
        """May this caller see a message with these senders and recipients?"""
        if not self.restricted:
            return True
        mine = set(self.addresses)
        # "@example.org" (a user store's entry): every address of the domain.
        return any(
            a.lower() in mine or "@" + a.lower().rpartition("@")[2] in mine for a in addresses
        )


def route_permission(request: Request) -> tuple[bool, str | None]:
    """(a route matched path and method, the permission it names); a path matched
    with another method is left to FastAPI's 405.

    The routes are the API's own (``app.state.api_routes``, set by ``create_app``):
    FastAPI wraps included routers, so the application's route list does not show
    them to a middleware."""
    for route in request.app.state.api_routes:
        match, _ = route.matches(request.scope)
        if match == Match.FULL:
            extra = getattr(route, "openapi_extra", None) or {}
            return True, extra.get("x-permission")
    return False, None


async def authenticate(request: Request, backend: Backend) -> Principal | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and parse_token(token) is not None:
        key = await backend.keys().verify(token.strip())
        return Principal.from_key(key) if key is not None else None
    return None


async def session_of(request: Request, backend: Backend) -> Session | None:
    """The console session of the request's cookie, while it lasts; one opened with
    an API key ends when the key is revoked or expires."""
    cookie = request.cookies.get(COOKIE, "")
    if not cookie:
        return None
    store = backend.sessions()
    session = await store.get(cookie)
    if session is None:
        return None
    if session.kind == "key":
        key = await backend.keys().get(session.id)
        if key is None or key.expired(time.time()) or key.role != session.role:
            await store.end(cookie)
            return None
    return session


SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def current(request: Request) -> Principal:
    """The authenticated caller (set by the middleware); for handlers."""
    principal = getattr(request.state, "principal", None)
    assert isinstance(principal, Principal), "route outside the auth middleware"
    return principal


Next = Callable[[Request], Awaitable[Response]]


async def auth_middleware(request: Request, call_next: Next) -> Response:
    path = request.url.path
    if not path.startswith("/api/") or path in PUBLIC_API_PATHS:
        return await call_next(request)
    backend: Backend = request.app.state.backend
    has_header = bool(request.headers.get("authorization", "").strip())
    if not has_header and not request.cookies.get(COOKIE):
        return problem_response(
            request,
            401,
            "credentials required: Authorization: Bearer <API key>",
            "unauthorized",
            headers=CHALLENGE,
        )
    try:
        if has_header:
            principal = await authenticate(request, backend)
        else:
            session = await session_of(request, backend)
            if session is None:
                return problem_response(
                    request,
                    401,
                    "the console session has ended: log in again",
                    "unauthorized",
                    headers=CHALLENGE,
                )
            if request.method not in SAFE_METHODS and not csrf_ok(
                session, request.headers.get(CSRF_HEADER)
            ):
                return problem_response(
                    request, 403, f"a change through a session needs {CSRF_HEADER}", "csrf"
                )
            principal = Principal.from_session(session)
    except (Unavailable, TimeoutError, nats.errors.Error) as exc:
        return problem_response(request, 503, f"cannot check the key now: {exc}", "unavailable")
    if principal is None:
        return problem_response(
            request,
            401,
            "the API key is not valid (unknown, revoked or expired)",
            "unauthorized",
            headers=CHALLENGE,
        )
    request.state.principal = principal
    matched, permission = route_permission(request)
    if matched:
        if permission is None or not allowed(principal.role, permission):
            return problem_response(
                request,
                403,
                f"role {principal.role!r} may not do this"
                + (f" (needs {permission})" if permission else ""),
                "forbidden",
            )
    return await call_next(request)
