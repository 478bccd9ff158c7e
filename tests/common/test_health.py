"""The one health endpoint: liveness, readiness naming what fails, Prometheus metrics."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request

from elemta.common.health import HealthServer


def get(port: int, path: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, resp.headers["Content-Type"], resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


async def test_readiness_names_the_checks_that_fail_and_recovers_when_they_pass() -> None:
    nats_up = False
    health = HealthServer("127.0.0.1:0")
    health.add_check("nats", lambda: nats_up)
    health.add_check("broken", lambda: 1 / 0 == 0)  # a check that raises fails
    port = await health.start()
    try:
        assert await asyncio.to_thread(get, port, "/healthz") == (
            200,
            "text/plain; charset=utf-8",
            "ok\n",
        )
        status, _, body = await asyncio.to_thread(get, port, "/readyz")
        assert (status, body) == (503, "not ready: nats, broken\n")
        nats_up = True
        del health.checks["broken"]
        status, _, body = await asyncio.to_thread(get, port, "/readyz")
        assert (status, body) == (200, "ready\n")
        status, ctype, body = await asyncio.to_thread(get, port, "/metrics")
        assert status == 200 and ctype.startswith("text/plain; version=")
        assert "python_info" in body or "process_" in body
    finally:
        await health.stop()
