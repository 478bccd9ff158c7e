"""``/api/v1/keys`` and ``/api/v1/me``: API keys (created, listed, revoked) and the caller."""

from __future__ import annotations

import time
from typing import Literal

from fastapi import APIRouter, Path, Request
from pydantic import BaseModel, Field, model_validator

from elemta.common.apikeys import KEY_ID_PATTERN, ApiKey

from ..auth import current
from ..backend import Backend
from ..problems import PROBLEM_RESPONSES, ProblemError
from . import needs

router = APIRouter(prefix="/api/v1", responses=PROBLEM_RESPONSES, tags=["keys"])

Role = Literal["admin", "operator", "readonly", "user"]


class Me(BaseModel):
    kind: str
    id: str
    label: str
    role: str
    addresses: list[str]


class KeyInfo(BaseModel):
    id: str
    label: str
    role: str
    created_at: float
    created_by: str
    expires_at: float = Field(description="epoch seconds; 0: never")
    addresses: list[str]

    @classmethod
    def of(cls, key: ApiKey) -> KeyInfo:
        return cls(**key.public())


class KeyCreated(KeyInfo):
    token: str = Field(description="the key itself: shown this once, never again")


class KeyRequest(BaseModel):
    label: str = Field(min_length=1, max_length=100, pattern=r"^[^\x00-\x1f\x7f]+$")
    role: Role
    expires_at: float = Field(0.0, ge=0, description="epoch seconds; 0: never")
    addresses: list[str] = Field(
        default_factory=list,
        max_length=100,
        description="for role user: the mail addresses whose messages it sees",
    )

    @model_validator(mode="after")
    def _addresses(self) -> KeyRequest:
        if self.role == "user" and not self.addresses:
            raise ValueError("a key with role user needs at least one address")
        for a in self.addresses:
            if "@" not in a or len(a) > 254 or any(c.isspace() for c in a):
                raise ValueError(f"{a!r} is not a mail address")
        return self


def _backend(request: Request) -> Backend:
    backend: Backend = request.app.state.backend
    return backend


@router.get("/me", response_model=Me, openapi_extra=needs("self.read"))
async def me(request: Request) -> Me:
    p = current(request)
    return Me(kind=p.kind, id=p.id, label=p.label, role=p.role, addresses=list(p.addresses))


@router.get("/keys", response_model=list[KeyInfo], openapi_extra=needs("keys.read"))
async def list_keys(request: Request) -> list[KeyInfo]:
    return [KeyInfo.of(k) for k in await _backend(request).keys().list()]


@router.post("/keys", response_model=KeyCreated, status_code=201, openapi_extra=needs("keys.write"))
async def create_key(body: KeyRequest, request: Request) -> KeyCreated:
    if body.expires_at and body.expires_at <= time.time():
        raise ProblemError(422, "expires_at is in the past", "invalid-input")
    backend = _backend(request)
    p = current(request)
    key, token = await backend.keys().create(
        body.label, body.role, f"{p.kind}:{p.id}", body.expires_at, body.addresses
    )
    await backend.audit().record(
        p.actor(),
        "key.create",
        key.id,
        request.client.host if request.client else "",
        label=key.label,
        role=key.role,
        expires_at=key.expires_at,
    )
    return KeyCreated(**key.public(), token=token)


@router.delete(
    "/keys/{key_id}", status_code=204, openapi_extra=needs("keys.write"), response_model=None
)
async def revoke_key(
    request: Request,
    key_id: str = Path(pattern=KEY_ID_PATTERN, description="12 hex digits"),
) -> None:
    backend = _backend(request)
    if not await backend.keys().revoke(key_id):
        raise ProblemError(404, f"no API key {key_id!r}", "not-found")
    p = current(request)
    await backend.audit().record(
        p.actor(), "key.revoke", key_id, request.client.host if request.client else ""
    )
