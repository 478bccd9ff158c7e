"""The queue: summary (qshape), list and search, the raw message, and actions on one
message or on every message a filter selects. Actions are asked of the queue
service (:mod:`..control`), recorded in the audit log, and answer how many
messages they touched."""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from ..auth import Principal, current
from ..control import QueueControl
from ..listing import Filter, qshape, summarize
from ..problems import PROBLEM_RESPONSES, ProblemError
from ..view import QueueView
from . import needs
from .messages import QUEUE_ID_PATH, load, qid_or_400

router = APIRouter(prefix="/api/v1", responses=PROBLEM_RESPONSES, tags=["queue"])

State = Literal["active", "deferred", "held", "failed"]
Action = Literal["hold", "release", "retry", "bounce", "delete"]
DOMAIN = r"^[A-Za-z0-9.-]{1,253}$"
ADDRESS = r"^[^\s@]{0,64}@?[A-Za-z0-9.-]{0,253}$"
MAX_PAGE = 1000
MAX_BULK = 10000


class LastError(BaseModel):
    code: int = 0
    enhanced: str = ""
    text: str = ""
    host: str = ""
    at: float = 0.0


class MessageSummary(BaseModel):
    id: str
    state: State
    sender: str
    recipients: list[str]
    pending: list[str]
    size: int
    received_at: float
    age: float = Field(description="seconds since it was received")
    destinations: list[str]
    next_attempt: float = Field(description="epoch seconds of the next retry; 0: none waiting")
    attempts: int
    last_error: LastError | None
    final: dict[str, str]


class MessagePage(BaseModel):
    messages: list[MessageSummary]
    next_cursor: str | None = Field(None, description="pass as cursor= for the next page")


class DestinationRow(BaseModel):
    destination: str
    total: int
    ages: list[int] = Field(description="messages per age bucket (see age_buckets)")
    deferred: int
    held: int
    last_error: LastError | None
    suspended_until: float = 0.0


class QueueSummary(BaseModel):
    total: int
    by_state: dict[str, int]
    age_buckets: list[str]
    destinations: list[DestinationRow]


class MessageFilter(BaseModel):
    """Every given field must match; give at least one."""

    state: State | None = None
    sender: str = Field("", max_length=320, pattern=ADDRESS)
    sender_domain: str = Field("", max_length=253, pattern=DOMAIN + "|^$")
    recipient: str = Field("", max_length=320, pattern=ADDRESS)
    recipient_domain: str = Field("", max_length=253, pattern=DOMAIN + "|^$")
    domain: str = Field(
        "", max_length=253, pattern=DOMAIN + "|^$", description="sender's or a recipient's"
    )
    destination: str = Field("", max_length=253, pattern=DOMAIN + "|^$")
    min_age: float = Field(0, ge=0, le=1e9, description="seconds")
    max_age: float = Field(0, ge=0, le=1e9, description="seconds")
    min_size: int = Field(0, ge=0, le=2**40)
    max_size: int = Field(0, ge=0, le=2**40)

    def selection(self) -> Filter:
        return Filter(**{**self.model_dump(), "state": self.state or ""})


class ActionResult(BaseModel):
    action: Action
    matched: int = Field(description="messages the request named or its filter selected")
    touched: int = Field(description="messages the action changed")
    results: dict[str, dict[str, Any]]


def _view(request: Request) -> QueueView:
    view: QueueView = request.app.state.view
    return view


def _filter_query(
    state: Annotated[State | None, Query()] = None,
    sender: Annotated[str, Query(max_length=320, pattern=ADDRESS)] = "",
    sender_domain: Annotated[str, Query(max_length=253, pattern=DOMAIN + "|^$")] = "",
    recipient: Annotated[str, Query(max_length=320, pattern=ADDRESS)] = "",
    recipient_domain: Annotated[str, Query(max_length=253, pattern=DOMAIN + "|^$")] = "",
    domain: Annotated[str, Query(max_length=253, pattern=DOMAIN + "|^$")] = "",
    destination: Annotated[str, Query(max_length=253, pattern=DOMAIN + "|^$")] = "",
    min_age: Annotated[float, Query(ge=0, le=1e9)] = 0,
    max_age: Annotated[float, Query(ge=0, le=1e9)] = 0,
    min_size: Annotated[int, Query(ge=0, le=2**40)] = 0,
    max_size: Annotated[int, Query(ge=0, le=2**40)] = 0,
) -> MessageFilter:
    return MessageFilter(
        state=state,
        sender=sender,
        sender_domain=sender_domain,
        recipient=recipient,
        recipient_domain=recipient_domain,
        domain=domain,
        destination=destination,
        min_age=min_age,
        max_age=max_age,
        min_size=min_size,
        max_size=max_size,
    )


async def select(request: Request, who: Principal, flt: Filter) -> list[dict[str, Any]]:
    """Summaries of the messages the filter selects and the caller may see, by queue id."""
    view = _view(request)
    records = await view.states()
    if flt.state in ("", "failed"):
        records += await view.failed_states()
    now = time.time()
    out = []
    for record in records:
        m = summarize(record, now)
        if flt.matches(m) and who.sees([m["sender"], *m["recipients"]]):
            out.append(m)
    out.sort(key=lambda m: m["id"])
    return out


@router.get("/queue/summary", response_model=QueueSummary, openapi_extra=needs("queue.summary"))
async def summary(request: Request) -> QueueSummary:
    """Counts by state; per destination, messages by age (qshape) and the last error."""
    view = _view(request)
    records = await view.states() + await view.failed_states()
    table = qshape(records, time.time())
    now = time.time()
    suspended = {
        s["domain"]: float(s.get("until") or 0)
        for s in await view.suspensions()
        if float(s.get("until") or 0) > now
    }
    for row in table["destinations"]:
        row["suspended_until"] = suspended.get(row["destination"], 0.0)
    return QueueSummary(**table)


@router.get("/messages", response_model=MessagePage, openapi_extra=needs("queue.read"))
async def list_messages(
    request: Request,
    flt: Annotated[MessageFilter, Depends(_filter_query)],
    limit: int = Query(100, ge=1, le=MAX_PAGE),
    cursor: str = Query("", max_length=64, description="next_cursor of the previous page"),
) -> MessagePage:
    """Messages in the queue (and failed ones still kept), oldest queue id first."""
    selected = await select(request, current(request), flt.selection())
    if cursor:
        selected = [m for m in selected if m["id"] > cursor.upper()]
    page = selected[:limit]
    more = len(selected) > limit
    return MessagePage(
        messages=[MessageSummary(**m) for m in page],
        next_cursor=page[-1]["id"] if more and page else None,
    )


@router.get(
    "/messages/{id}/raw",
    openapi_extra=needs("queue.raw"),
    response_class=Response,
    responses={200: {"content": {"message/rfc822": {}}, "description": "the stored message"}},
)
async def raw_message(request: Request, id: str = QUEUE_ID_PATH) -> Response:
    """The stored message, headers and body, as received (admin only)."""
    qid = qid_or_400(id)
    state, _ = await load(request, qid, current(request))
    data = await _view(request).raw_message(state) if isinstance(state, dict) else None
    if data is None:
        raise ProblemError(404, f"message {qid} is no longer stored", "not-found")
    return Response(data, media_type="message/rfc822")


async def _act(
    request: Request, action: Action, ids: list[str], target: str, details: dict[str, Any]
) -> ActionResult:
    who = current(request)
    control = QueueControl(request.app.state.backend)
    results = await control.act(action, ids, f"{who.kind}:{who.id} ({who.label})") if ids else {}
    touched = sum(1 for r in results.values() if r.get("ok"))
    await request.app.state.backend.audit().record(
        who.actor(),
        f"queue.{action}",
        target,
        request.client.host if request.client else "",
        matched=len(ids),
        touched=touched,
        **details,
    )
    return ActionResult(action=action, matched=len(ids), touched=touched, results=results)


@router.post(
    "/messages/{id}/{action}", response_model=ActionResult, openapi_extra=needs("queue.act")
)
async def act_on_message(request: Request, action: Action, id: str = QUEUE_ID_PATH) -> ActionResult:
    """hold, release, retry (now), bounce (DSN to the sender) or delete (no notice)."""
    qid = qid_or_400(id)
    state, _ = await load(request, qid, current(request))
    if state is None:
        raise ProblemError(404, f"message {qid} is no longer queued", "not-found")
    return await _act(request, action, [qid], qid, {})


@router.post(
    "/queue/actions/{action}", response_model=ActionResult, openapi_extra=needs("queue.act")
)
async def act_in_bulk(request: Request, action: Action, body: MessageFilter) -> ActionResult:
    """The action on every queued message the filter selects (at most 10000 at once)."""
    flt = body.selection()
    if flt.empty():
        raise ProblemError(
            422,
            "give at least one filter (an action on the whole queue needs one)",
            "invalid-input",
        )
    selected = [m for m in await select(request, current(request), flt) if m["state"] != "failed"]
    ids = [m["id"] for m in selected[:MAX_BULK]]
    return await _act(
        request, action, ids, "filter", {"filter": body.model_dump(exclude_defaults=True)}
    )
