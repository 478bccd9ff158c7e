"""``/api/v1/config`` and ``/api/v1/health``: the effective configuration with secrets
redacted, and the readiness of each service as this api process reaches it."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from fastapi import APIRouter, Request
from pydantic import BaseModel

from elemta.common.config import Config, redacted

from ..problems import PROBLEM_RESPONSES
from . import needs

router = APIRouter(prefix="/api/v1", responses=PROBLEM_RESPONSES, tags=["system"])


class ServiceHealth(BaseModel):
    service: str
    address: str
    ready: bool
    detail: str


@router.get("/config", response_model=dict[str, Any], openapi_extra=needs("system.read"))
async def config(request: Request) -> dict[str, Any]:
    """The configuration the api service runs with (file and environment); passwords,
    tokens and keys print as ``***``."""
    cfg: Config = request.app.state.backend.cfg
    return redacted(cfg)


def _probe_address(listen: str) -> str:
    host, _, port = listen.rpartition(":")
    if host in ("", "0.0.0.0", "[::]", "::"):
        host = "127.0.0.1"
    return f"{host}:{port}"


async def _probe(client: httpx.AsyncClient, service: str, listen: str) -> ServiceHealth:
    address = _probe_address(listen)
    try:
        resp = await client.get(f"http://{address}/readyz")
        return ServiceHealth(
            service=service,
            address=address,
            ready=resp.status_code == 200,
            detail=resp.text.strip(),
        )
    except httpx.HTTPError as exc:
        return ServiceHealth(
            service=service, address=address, ready=False, detail=f"unreachable: {exc!r}"
        )


@router.get("/health", response_model=list[ServiceHealth], openapi_extra=needs("system.read"))
async def health(request: Request) -> list[ServiceHealth]:
    """Each service's ``/readyz`` at the health address of the configuration (one
    process of each; on one machine, as ``elemta run`` starts them). In Kubernetes
    the pods' own probes are the reference."""
    cfg: Config = request.app.state.backend.cfg
    backend = request.app.state.backend
    targets = {
        "ingress": cfg.ingress.http_listen,
        "policy": cfg.policy.http_listen,
        "queue": cfg.queue.http_listen,
        "delivery": cfg.delivery.http_listen,
    }
    async with httpx.AsyncClient(timeout=2.0) as client:
        found = await asyncio.gather(*(_probe(client, n, a) for n, a in targets.items()))
    bad = backend.failing()
    api = ServiceHealth(
        service="api",
        address=_probe_address(cfg.api.listen),
        ready=not bad,
        detail="ready" if not bad else "not ready: " + ", ".join(bad),
    )
    return [api, *found]
