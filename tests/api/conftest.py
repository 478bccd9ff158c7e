"""Fixtures of the API tests: a configuration on the test's nats-server, the API in
this process, and a key of every role."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import nats
import pytest
from nats.js import JetStreamContext

from elemta.common.config import Config, load_config
from elemta.common.jetstream import ensure_streams

from support.apiserver import api_server, make_keys, wait_status
from support.dnsserver import free_port
from support.natsserver import NatsServer


@pytest.fixture
def cfg(nats_server: NatsServer) -> Config:
    return load_config(
        env={
            "ELEMTA_NATS_URL": nats_server.url,
            "ELEMTA_NATS_PUBLISH_TIMEOUT": "2",
            "ELEMTA_NATS_CONNECT_TIMEOUT": "1",
            "ELEMTA_API_LISTEN": f"127.0.0.1:{free_port()}",
        }
    )


@pytest.fixture
async def js(nats_server: NatsServer) -> AsyncIterator[JetStreamContext]:
    nc = await nats.connect(nats_server.url)
    yield nc.jetstream()
    await nc.close()


@pytest.fixture
async def client(cfg: Config) -> AsyncIterator[httpx.AsyncClient]:
    """The API before the queue service has created the streams (no keys yet)."""
    async with api_server(cfg) as url, httpx.AsyncClient(base_url=url) as c:
        yield c


@pytest.fixture
async def tokens(js: JetStreamContext, cfg: Config) -> dict[str, str]:
    await ensure_streams(js, cfg)
    return await make_keys(cfg.nats.url)


@pytest.fixture
async def api(
    js: JetStreamContext, cfg: Config, tokens: dict[str, str]
) -> AsyncIterator[httpx.AsyncClient]:
    """A ready API (the streams exist, as the queue service creates them), with an
    admin key on every request unless a test sends another."""
    async with api_server(cfg) as url:
        headers = {"Authorization": f"Bearer {tokens['admin']}"}
        async with httpx.AsyncClient(base_url=url, headers=headers) as c:
            await wait_status(c, "/readyz", 200)
            yield c
