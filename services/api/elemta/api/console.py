"""The web console: its static files and its login (``/console``).

The console is plain HTML, CSS and ES modules in the package (``console/``
beside this module): no build step, nothing fetched from elsewhere, so it works
offline and its Content-Security-Policy allows only its own origin. It talks to
the same ``/api/v1`` as every other client, through a session cookie opened here
(:mod:`.sessions`); what it shows and offers follows the caller's permissions,
which ``GET /console/session`` lists from the one table (:mod:`.permissions`),
and the API refuses whatever the role may not do anyway.

``POST /console/session`` logs in with an API key, or with a user name and
password checked by the policy service (:mod:`.logins`); failed logins are
limited per client address (``api.login_attempts`` in 5 minutes, then 429), and
the policy service's lockout counts password failures across every replica.
``GET /console/session`` answers who is logged in and the CSRF token;
``DELETE /console/session`` logs out.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field, model_validator

from .auth import CHALLENGE, Principal, session_of
from .backend import Backend
from .permissions import PERMISSIONS, ROLES, allowed
from .problems import ProblemError
from .sessions import COOKIE, CSRF_HEADER, LoginLimiter, Session, csrf_ok

__all__ = ["ASSETS", "install"]

log = logging.getLogger(__name__)

ASSETS = Path(__file__).with_name("console")
PREFIX = "/console"
CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)

router = APIRouter(prefix=PREFIX, include_in_schema=False)


class Login(BaseModel):
    """An API key, or a user name and password (checked by the policy service)."""

    api_key: str = Field("", max_length=200)
    login: str = Field("", max_length=320)
    password: str = Field("", max_length=1024)

    @model_validator(mode="after")
    def _one_way(self) -> Login:
        if bool(self.api_key) == bool(self.login or self.password):
            raise ValueError("give api_key, or login and password")
        if self.login and not self.password or self.password and not self.login:
            raise ValueError("give login and password")
        return self


class SessionInfo(BaseModel):
    kind: str
    id: str
    label: str
    role: str
    addresses: list[str]
    permissions: list[str]
    csrf_token: str
    expires_at: float


def _info(s: Session) -> SessionInfo:
    return SessionInfo(
        kind=s.kind,
        id=s.id,
        label=s.label,
        role=s.role,
        addresses=s.addresses,
        permissions=sorted(p for p in PERMISSIONS if allowed(s.role, p)),
        csrf_token=s.csrf,
        expires_at=s.expires_at,
    )


def _backend(request: Request) -> Backend:
    backend: Backend = request.app.state.backend
    return backend


def _client(request: Request) -> str:
    return request.client.host if request.client else ""


@router.post("/session", status_code=201, response_model=SessionInfo)
async def login(body: Login, request: Request) -> Response:
    limiter: LoginLimiter = request.app.state.login_limiter
    client = _client(request)
    wait = limiter.retry_after(client)
    if wait:
        raise ProblemError(
            429,
            f"too many failed logins from {client}: try again in {int(wait)} s",
            "too-many-logins",
            headers={"Retry-After": str(int(wait))},
        )
    backend = _backend(request)
    if body.api_key:
        key = await backend.keys().verify(body.api_key.strip())
        if key is None:
            limiter.failed(client)
            log.warning("console login refused: API key", extra={"remote": client})
            raise ProblemError(
                401,
                "the API key is not valid (unknown, revoked or expired)",
                "unauthorized",
                headers=CHALLENGE,
            )
        kind, who, label, role, addresses = "key", key.id, key.label, key.role, key.addresses
        ends = key.expires_at
    else:
        found = await backend.logins.check(body.login, body.password, client)
        if found.result == "unavailable":
            raise ProblemError(503, "the user store cannot be asked now", "unavailable")
        if found.result == "locked":
            raise ProblemError(
                429,
                f"too many failed logins: try again in {found.retry_after} s",
                "too-many-logins",
                headers={"Retry-After": str(max(1, found.retry_after))},
            )
        if found.result != "ok":
            limiter.failed(client)
            log.warning("console login refused: %s", found.result, extra={"remote": client})
            detail = (
                f"{found.login} has no console role ({', '.join(ROLES)})"
                if found.result == "no-role"
                else "wrong user name or password"
            )
            raise ProblemError(401, detail, "unauthorized", headers=CHALLENGE)
        kind, who, label, role, addresses = (
            "user",
            found.login,
            found.login,
            found.role,
            found.addresses,
        )
        ends = 0.0
    limiter.succeeded(client)
    session, cookie = await backend.sessions().create(kind, who, label, role, addresses, ends=ends)
    await backend.audit().record(
        Principal.from_session(session).actor(), "session.login", who, client
    )
    response = JSONResponse(_info(session).model_dump(), status_code=201)
    response.set_cookie(
        COOKIE,
        cookie,
        max_age=max(1, int(session.expires_at - time.time())),
        path="/",
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )
    return response


async def _session(request: Request) -> Session:
    session = await session_of(request, _backend(request))
    if session is None:
        raise ProblemError(401, "not logged in", "unauthorized", headers=CHALLENGE)
    return session


@router.get("/session", response_model=SessionInfo)
async def whoami(request: Request) -> SessionInfo:
    return _info(await _session(request))


@router.delete("/session", status_code=204, response_model=None)
async def logout(request: Request) -> Response:
    session = await _session(request)
    if not csrf_ok(session, request.headers.get(CSRF_HEADER)):
        raise ProblemError(403, f"logging out needs {CSRF_HEADER}", "csrf")
    await _backend(request).sessions().end(request.cookies.get(COOKIE, ""))
    await (
        _backend(request)
        .audit()
        .record(
            Principal.from_session(session).actor(), "session.logout", session.id, _client(request)
        )
    )
    response = Response(status_code=204)
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
    return response


def install(app: FastAPI) -> None:
    """The console's routes, files and headers; ``/`` leads to it."""
    app.state.login_limiter = LoginLimiter(app.state.backend.cfg.api.login_attempts)
    app.include_router(router)

    @app.get("/", include_in_schema=False)
    @app.get(PREFIX, include_in_schema=False)
    async def to_console() -> RedirectResponse:
        return RedirectResponse(PREFIX + "/", status_code=307)

    app.mount(PREFIX, StaticFiles(directory=ASSETS, html=True), name="console")

    @app.middleware("http")
    async def console_headers(request: Request, call_next):  # type: ignore[no-untyped-def]
        response: Response = await call_next(request)
        if request.url.path.startswith(PREFIX):
            response.headers.setdefault("Content-Security-Policy", CSP)
            response.headers.setdefault("X-Frame-Options", "DENY")
            response.headers.setdefault("Referrer-Policy", "no-referrer")
        return response
