"""The aiohttp application: JSON endpoints, the dashboard page, health and metrics."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger, BaseRequest, StreamResponse
from prometheus_client import Counter

from elemta.common.config import Config
from elemta.common.health import HEALTH_PATHS, Health

from .page import INDEX_HTML
from .view import QueueView, Unavailable, normalize_queue_id

__all__ = ["AccessLogger", "VIEW", "create_app"]

log = logging.getLogger(__name__)

VIEW: web.AppKey[QueueView] = web.AppKey("view", QueueView)

REQUESTS = Counter(
    "elemta_api_requests_total",
    "HTTP requests answered by the API, by route and status code",
    ["route", "code"],
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error(status: int, code: str, detail: str) -> web.Response:
    return web.json_response({"error": code, "detail": detail}, status=status)


def _route_name(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


@web.middleware
async def _api_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """JSON errors for ``/api``, a request counter and ``nosniff`` on every answer."""
    try:
        resp = await handler(request)
    except Unavailable as exc:
        resp = error(503, "unavailable", str(exc))
    except web.HTTPException as exc:
        if not request.path.startswith("/api/") or exc.status < 400:
            raise
        detail = exc.text or ""
        if not detail or detail.startswith(f"{exc.status}: "):  # aiohttp's own text
            detail = f"{request.method} {request.path}: {exc.reason}"
        resp = error(exc.status, exc.reason.lower().replace(" ", "_"), detail)
    resp.headers.setdefault("X-Content-Type-Options", "nosniff")
    REQUESTS.labels(_route_name(request), str(resp.status)).inc()
    return resp


def _queue_id(request: web.Request) -> str:
    raw = request.match_info["id"]
    qid = normalize_queue_id(raw)
    if qid is None:
        raise web.HTTPBadRequest(
            text=f"{raw!r} is not a queue id (20 characters of Crockford base32)"
        )
    return qid


def _not_found(qid: str) -> web.HTTPNotFound:
    return web.HTTPNotFound(text=f"no state and no history for queue id {qid}")


async def queue(request: web.Request) -> web.Response:
    return web.json_response(await request.app[VIEW].queue_summary())


async def message(request: web.Request) -> web.Response:
    qid = _queue_id(request)
    view = request.app[VIEW]
    state = await view.message_state(qid)
    events = await view.message_events(qid)
    if state is None and not events:
        raise _not_found(qid)
    return web.json_response({"id": qid, "state": state, "events": events})


async def message_events(request: web.Request) -> web.Response:
    qid = _queue_id(request)
    view = request.app[VIEW]
    events = await view.message_events(qid)
    if not events and await view.message_state(qid) is None:
        raise _not_found(qid)
    return web.json_response({"id": qid, "events": events})


async def index(request: web.Request) -> web.Response:
    return web.Response(text=INDEX_HTML, content_type="text/html", charset="utf-8")


class AccessLogger(AbstractAccessLogger):
    """One line per request, except the probes and scrapes that would drown them."""

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        if request.path in HEALTH_PATHS:
            return
        self.logger.info(
            "%s %s %d",
            request.method,
            request.path_qs,
            response.status,
            extra={"remote": request.remote, "duration_ms": round(time * 1000, 1)},
        )


def create_app(cfg: Config, view: QueueView | None = None) -> web.Application:
    """The application; it connects to NATS on start-up and disconnects on clean-up."""
    app = web.Application(middlewares=[_api_middleware])
    app[VIEW] = view or QueueView(cfg)

    async def nats_ctx(app: web.Application) -> AsyncIterator[None]:
        await app[VIEW].start()
        yield
        await app[VIEW].close()

    app.cleanup_ctx.append(nats_ctx)
    app.router.add_get("/", index)
    health = Health()
    for name, check in app[VIEW].checks().items():
        health.add_check(name, check)
    health.add_routes(app)
    app.router.add_get("/api/v1/queue", queue)
    app.router.add_get("/api/v1/messages/{id}", message)
    app.router.add_get("/api/v1/messages/{id}/events", message_events)
    return app
