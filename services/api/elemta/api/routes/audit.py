"""``/api/v1/audit``: the audit log, newest first."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from ..backend import Backend
from ..problems import PROBLEM_RESPONSES
from . import needs

router = APIRouter(prefix="/api/v1", responses=PROBLEM_RESPONSES, tags=["audit"])


class AuditEntry(BaseModel):
    model_config = ConfigDict(extra="allow")

    seq: int
    at: float = 0.0
    actor: dict[str, Any] = Field(default_factory=dict)
    action: str = ""
    target: str = ""
    remote: str = ""


class AuditPage(BaseModel):
    entries: list[AuditEntry]
    next_before: int | None = Field(
        None, description="pass as before= for the next (older) page; null at the end"
    )


@router.get("/audit", response_model=AuditPage, openapi_extra=needs("audit.read"))
async def audit(
    request: Request,
    limit: int = Query(100, ge=1, le=1000),
    before: int = Query(0, ge=0, description="only records older than this sequence"),
) -> AuditPage:
    backend: Backend = request.app.state.backend
    entries = await backend.audit().read(limit, before)
    last = entries[-1]["seq"] if len(entries) == limit and entries[-1]["seq"] > 1 else None
    return AuditPage(entries=[AuditEntry(**e) for e in entries], next_before=last)
