"""``/api/v1/queue`` and ``/api/v1/messages``: the queue's counts, one message's state
and history. A ``user`` sees only messages whose sender or a recipient is one of its
addresses; another's message is answered 404, as if it did not exist."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Path, Request
from pydantic import BaseModel, Field

from elemta.common.history import holds_done

from ..auth import Principal, current
from ..listing import summarize
from ..problems import PROBLEM_RESPONSES, ProblemError
from ..view import QueueView, normalize_queue_id
from . import needs

router = APIRouter(prefix="/api/v1", responses=PROBLEM_RESPONSES, tags=["queue"])

QUEUE_ID_PATH = Path(
    description="20 characters of Crockford base32; lower case is folded to upper",
    min_length=1,
    max_length=64,
)


class Attempt(BaseModel):
    at: float = 0.0
    dest: str = ""
    attempt: int = 0
    recipient: str = ""
    host: str = ""
    status: str = ""
    code: int = 0
    enhanced: str = ""
    text: str = ""


class MessageRecord(BaseModel):
    id: str
    state: Any | None
    events: list[Any]
    attempts: list[Attempt] = Field(
        default_factory=list, description="every delivery attempt, oldest first"
    )
    verdicts: list[Any] = Field(
        default_factory=list, description="the policy's records (checks, added headers)"
    )
    trace_id: str = ""
    trace_url: str = Field("", description="the trace in the Jaeger UI (api.jaeger_url)")
    summary: dict[str, Any] | None = Field(
        None, description="as in the list: state (active, deferred, held, failed), age ..."
    )


def _attempts(events: list[Any]) -> list[Attempt]:
    out = []
    for e in events:
        if isinstance(e, dict) and e.get("type") == "attempt":
            fields = {k: e[k] for k in Attempt.model_fields if k in e}
            try:
                out.append(Attempt(**fields))
            except ValueError:
                continue
    return out


def _trace_id(state: Any) -> str:
    trace = state.get("trace") if isinstance(state, dict) else None
    parent = str((trace or {}).get("traceparent") or "")
    parts = parent.split("-")
    return parts[1] if len(parts) == 4 and len(parts[1]) == 32 else ""


class MessageEvents(BaseModel):
    id: str
    events: list[Any]


def _view(request: Request) -> QueueView:
    view: QueueView = request.app.state.view
    return view


def qid_or_400(raw: str) -> str:
    qid = normalize_queue_id(raw)
    if qid is None:
        raise ProblemError(
            400, f"{raw!r} is not a queue id (20 characters of Crockford base32)", "bad-queue-id"
        )
    return qid


def parties(state: Any, events: list[Any]) -> list[str]:
    """Sender and recipients of a message, from its state or its first events."""
    found: list[str] = []
    sources = [state] if isinstance(state, dict) else []
    sources += [e for e in events[:3] if isinstance(e, dict)]
    for src in sources:
        sender = src.get("sender")
        if isinstance(sender, str) and sender:
            found.append(sender)
        rcpts = src.get("recipients")
        if isinstance(rcpts, list):
            found.extend(str(r) for r in rcpts)
    return found


async def load(request: Request, qid: str, who: Principal) -> tuple[Any, list[Any]]:
    """State and history of a message the caller may see; 404 otherwise."""
    view = _view(request)
    state = await view.message_state(qid)
    if state is None:
        state = await view.finished(qid)
    events = await view.message_events(qid)
    if isinstance(state, dict) and state.get("first_attempt") == "pending" and holds_done(events):
        # ended at its first attempt; its stored copy goes with the next bulk removal
        state = None
    if (state is None and not events) or not who.sees(parties(state, events)):
        raise ProblemError(404, f"no state and no history for queue id {qid}", "not-found")
    return state, events


@router.get("/queue", response_model=dict[str, Any], openapi_extra=needs("queue.summary"))
async def queue_counts(request: Request) -> dict[str, Any]:
    """Counts of messages and jobs, and every stream's state and durable consumers."""
    return await _view(request).queue_summary()


@router.get("/messages/{id}", response_model=MessageRecord, openapi_extra=needs("queue.read"))
async def message(request: Request, id: str = QUEUE_ID_PATH) -> MessageRecord:
    qid = qid_or_400(id)
    state, events = await load(request, qid, current(request))
    trace_id = _trace_id(state)
    base = request.app.state.backend.cfg.api.jaeger_url.rstrip("/")
    return MessageRecord(
        id=qid,
        state=state,
        events=events,
        attempts=_attempts(events),
        verdicts=[e for e in events if isinstance(e, dict) and e.get("type") == "policy"],
        trace_id=trace_id,
        trace_url=f"{base}/trace/{trace_id}" if base and trace_id else "",
        summary=summarize(state, time.time()) if isinstance(state, dict) else None,
    )


@router.get(
    "/messages/{id}/events", response_model=MessageEvents, openapi_extra=needs("queue.read")
)
async def message_events(request: Request, id: str = QUEUE_ID_PATH) -> MessageEvents:
    qid = qid_or_400(id)
    _, events = await load(request, qid, current(request))
    return MessageEvents(id=qid, events=events)
