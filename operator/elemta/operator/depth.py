"""Queue depth for the status: messages in ``ELEMTA_MESSAGES``, from NATS monitoring.

A message stays in ``ELEMTA_MESSAGES`` until every recipient is final, so the
stream's message count is the number of messages in the queue. The operator
reads it from the server's HTTP monitoring endpoint (``/jsz``, the one KEDA's
scaler reads), which needs no NATS credentials; when that endpoint is unknown or
does not answer in time, the depth is left out of the status.
"""

from __future__ import annotations

from typing import Any

import aiohttp

from elemta.common.jetstream import MESSAGES_STREAM

from .model import Cluster
from .scaling import monitoring_endpoint

__all__ = ["messages_in_stream", "queue_depth"]


def messages_in_stream(jsz: dict[str, Any], stream: str = MESSAGES_STREAM) -> int | None:
    """The message count of ``stream`` in a ``/jsz?streams=true`` answer."""
    for account in jsz.get("account_details") or []:
        for detail in account.get("stream_detail") or []:
            if detail.get("name") == stream:
                return int((detail.get("state") or {}).get("messages") or 0)
    return None


async def jsz_depth(endpoint: str, wait: float = 3.0) -> int | None:
    """Depth read from ``http://<endpoint>/jsz``; None when it cannot be read."""
    url = f"http://{endpoint}/jsz?streams=true"
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=wait)) as session:
            async with session.get(url) as resp:
                if resp.status != 200:
                    return None
                return messages_in_stream(await resp.json())
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return None


async def queue_depth(cluster: Cluster) -> int | None:
    endpoint = monitoring_endpoint(cluster)
    return await jsz_depth(endpoint) if endpoint else None
