"""``/api/v1/suspensions``: destinations delivery makes no attempt to, until a time
or until lifted (kept by the queue service; see elemta.common.suspensions)."""

from __future__ import annotations

import time

from fastapi import APIRouter, Path, Request
from pydantic import BaseModel, Field, model_validator

from elemta.common.suspensions import DOMAIN_PATTERN

from ..auth import current
from ..control import QueueControl
from ..problems import PROBLEM_RESPONSES, ProblemError
from ..view import QueueView
from . import needs

router = APIRouter(prefix="/api/v1", responses=PROBLEM_RESPONSES, tags=["suspensions"])


class SuspensionInfo(BaseModel):
    domain: str
    reason: str
    until: float = Field(description="epoch seconds")
    created_at: float
    created_by: str


class SuspensionRequest(BaseModel):
    domain: str = Field(max_length=253, description="recipient domain, lower case")
    reason: str = Field("", max_length=500)
    until: float = Field(0, ge=0, le=1e11, description="epoch seconds; or give duration")
    duration: float = Field(0, ge=0, le=1e9, description="seconds from now")

    @model_validator(mode="after")
    def _end(self) -> SuspensionRequest:
        import re

        self.domain = self.domain.lower().rstrip(".")
        if not re.match(DOMAIN_PATTERN, self.domain):
            raise ValueError(f"{self.domain!r} is not a domain name")
        if bool(self.until) == bool(self.duration):
            raise ValueError("give until or duration (one of them)")
        return self


@router.get(
    "/suspensions", response_model=list[SuspensionInfo], openapi_extra=needs("suspensions.read")
)
async def list_suspensions(request: Request) -> list[SuspensionInfo]:
    """Suspensions in force, by domain."""
    view: QueueView = request.app.state.view
    now = time.time()
    return sorted(
        (SuspensionInfo(**s) for s in await view.suspensions() if float(s.get("until") or 0) > now),
        key=lambda s: s.domain,
    )


@router.post(
    "/suspensions",
    response_model=SuspensionInfo,
    status_code=201,
    openapi_extra=needs("suspensions.write"),
)
async def suspend(body: SuspensionRequest, request: Request) -> SuspensionInfo:
    until = body.until or time.time() + body.duration
    if until <= time.time():
        raise ProblemError(422, "the suspension would end in the past", "invalid-input")
    who = current(request)
    reply = await QueueControl(request.app.state.backend).ask(
        "suspend",
        {
            "domain": body.domain,
            "reason": body.reason,
            "until": until,
            "by": f"{who.kind}:{who.id} ({who.label})",
        },
    )
    if not reply.get("ok"):
        raise ProblemError(422, str(reply.get("error")), "invalid-input")
    await request.app.state.backend.audit().record(
        who.actor(),
        "suspension.add",
        body.domain,
        request.client.host if request.client else "",
        reason=body.reason,
        until=until,
    )
    return SuspensionInfo(**reply["suspension"])


@router.delete(
    "/suspensions/{domain}",
    status_code=204,
    response_model=None,
    openapi_extra=needs("suspensions.write"),
)
async def lift(
    request: Request, domain: str = Path(max_length=253, pattern=DOMAIN_PATTERN)
) -> None:
    """Lift a suspension: the domain's waiting messages are tried at once."""
    reply = await QueueControl(request.app.state.backend).ask("unsuspend", {"domain": domain})
    if not reply.get("ok"):
        raise ProblemError(404, str(reply.get("error")), "not-found")
    who = current(request)
    await request.app.state.backend.audit().record(
        who.actor(),
        "suspension.remove",
        domain,
        request.client.host if request.client else "",
        flushed=reply.get("flushed", 0),
    )
