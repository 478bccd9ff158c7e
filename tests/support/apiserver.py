"""The api service for tests: in this process (uvicorn on a real socket, in the test's
event loop) or as ``elemta serve api``; and API keys of every role, written into NATS
as ``elemta key create --bootstrap`` writes them."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import nats
import uvicorn

from elemta.api.__main__ import _bind, _Server
from elemta.api.app import create_app
from elemta.common.apikeys import ROLES, KeyStore
from elemta.common.config import Config, load_config
from elemta.common.jetstream import ensure_streams

from .dnsserver import free_port
from .stack import ELEMTA

__all__ = ["USER_ADDRESS", "ApiProcess", "api_server", "make_keys", "wait_status"]

USER_ADDRESS = "carol@example.org"


@contextlib.asynccontextmanager
async def api_server(cfg: Config) -> AsyncIterator[str]:
    """Serve the API on ``cfg.api.listen`` until the block ends; yields its base URL."""
    sock = _bind(cfg.api.listen)
    server = _Server(uvicorn.Config(create_app(cfg), log_config=None, access_log=False))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    host, port = sock.getsockname()[:2]
    try:
        while not server.started:
            assert not task.done(), task.exception()
            await asyncio.sleep(0.02)
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        await task
        sock.close()


async def make_keys(nats_url: str) -> dict[str, str]:
    """One key per role (the ``user`` key sees :data:`USER_ADDRESS`); role -> token."""
    nc = await nats.connect(nats_url)
    try:
        store = await KeyStore.open(nc.jetstream())
        tokens = {}
        for role in ROLES:
            addresses = [USER_ADDRESS] if role == "user" else []
            _, tokens[role] = await store.create(f"test {role}", role, "test", 0.0, addresses)
        return tokens
    finally:
        await nc.close()


async def wait_status(client: httpx.AsyncClient, path: str, status: int, **kw: Any) -> None:
    last = None
    for _ in range(400):
        resp = await client.get(path, **kw)
        last = resp.status_code
        if last == status:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{path} never answered {status}; last {last}")


class ApiProcess:
    """``elemta serve api`` on its own port against ``nats_url``, with the streams
    created (as the queue service creates them) and a key of every role."""

    def __init__(self, workdir: Path, nats_url: str, with_queue: bool = False) -> None:
        self.with_queue = with_queue
        self.queue: subprocess.Popen[bytes] | None = None
        self.workdir = workdir
        self.nats_url = nats_url
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.tokens: dict[str, str] = {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = workdir / "api.log"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ELEMTA_")}
        env.update(
            ELEMTA_NATS_URL=self.nats_url,
            ELEMTA_API_LISTEN=f"127.0.0.1:{self.port}",
            ELEMTA_TELEMETRY_LOG_FORMAT="text",
        )
        return env

    def start(self) -> ApiProcess:
        async def prepare() -> dict[str, str]:
            nc = await nats.connect(self.nats_url)
            try:
                await ensure_streams(nc.jetstream(), load_config(env={}))
            finally:
                await nc.close()
            return await make_keys(self.nats_url)

        self.tokens = asyncio.run(prepare())
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            if self.with_queue:  # the actions and suspensions are the queue's to do
                qport = free_port()
                env = dict(self.env(), ELEMTA_QUEUE_HTTP_LISTEN=f"127.0.0.1:{qport}")
                self.queue = subprocess.Popen(
                    [ELEMTA, "serve", "queue"], env=env, stdout=log, stderr=log
                )
                self._wait(self.queue, f"http://127.0.0.1:{qport}/readyz")
            self.proc = subprocess.Popen(
                [ELEMTA, "serve", "api"], env=self.env(), stdout=log, stderr=log
            )
            self._wait(self.proc, self.url + "/readyz")
        return self

    def _wait(self, proc: subprocess.Popen[bytes], url: str) -> None:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, self.log.read_text()
            try:
                if httpx.get(url, timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, f"{url} not ready:\n" + self.log.read_text()
            time.sleep(0.1)

    def headers(self, role: str = "admin") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}

    def stop(self) -> None:
        for proc in (self.proc, self.queue):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self.proc = self.queue = None
