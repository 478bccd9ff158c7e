"""``elemta serve api`` as a process: configuration errors, a taken port, SIGTERM."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from support.dnsserver import free_port
from support.natsserver import NatsServer
from support.stack import ELEMTA, ROOT


def api_process(tmp_path: Path, **env: str) -> subprocess.Popen[str]:
    full = {"PATH": "/usr/bin:/bin", **env}
    return subprocess.Popen(
        [ELEMTA, "serve", "api"],
        cwd=str(tmp_path),
        env=full,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish(proc: subprocess.Popen[str], timeout: float = 30) -> str:
    """Wait for the exit and return the output; kill the process if it hangs."""
    try:
        return proc.communicate(timeout=timeout)[0]
    except subprocess.TimeoutExpired:
        proc.kill()
        out = proc.communicate()[0]
        raise AssertionError(f"elemta.api did not exit in {timeout}s:\n{out}") from None


def status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError):
        return 0


def test_a_bad_configuration_exits_78_naming_the_key(tmp_path: Path) -> None:
    proc = api_process(tmp_path, ELEMTA_API_LISTEN="not-an-address")
    out = finish(proc)
    assert proc.returncode == 78
    assert "api.listen" in out


def test_a_taken_port_makes_the_api_exit_1_saying_so(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = api_process(
            tmp_path,
            ELEMTA_API_LISTEN=f"127.0.0.1:{port}",
            ELEMTA_NATS_URL=f"nats://127.0.0.1:{free_port()}",
        )
        out = finish(proc)
    assert proc.returncode == 1
    assert "cannot listen" in out


def test_the_api_process_becomes_ready_and_stops_cleanly_on_sigterm(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    subprocess.run(  # the streams, as the queue service would create them
        [
            sys.executable,
            "-c",
            "import asyncio, nats\n"
            "from elemta.common.config import load_config\n"
            "from elemta.common.jetstream import ensure_streams\n"
            "async def main():\n"
            f"    nc = await nats.connect('{nats_server.url}')\n"
            "    await ensure_streams(nc.jetstream(), load_config(env={}))\n"
            "    await nc.close()\n"
            "asyncio.run(main())\n",
        ],
        cwd=str(ROOT),
        check=True,
        timeout=30,
    )
    port = free_port()
    proc = api_process(
        tmp_path, ELEMTA_API_LISTEN=f"127.0.0.1:{port}", ELEMTA_NATS_URL=nats_server.url
    )
    try:
        deadline = time.monotonic() + 30
        while status(f"http://127.0.0.1:{port}/readyz") != 200:
            assert proc.poll() is None, finish(proc)
            assert time.monotonic() < deadline, "api not ready"
            time.sleep(0.1)
        assert status(f"http://127.0.0.1:{port}/api/v1/queue") == 401  # no key
    finally:
        proc.send_signal(signal.SIGTERM)
        out = finish(proc)
    assert proc.returncode == 0, out
    assert "api stopped" in out


def test_the_api_stops_promptly_on_sigterm_while_nats_is_unreachable(tmp_path: Path) -> None:
    port = free_port()
    proc = api_process(
        tmp_path,
        ELEMTA_API_LISTEN=f"127.0.0.1:{port}",
        ELEMTA_NATS_URL=f"nats://127.0.0.1:{free_port()}",
    )
    try:
        deadline = time.monotonic() + 30
        while status(f"http://127.0.0.1:{port}/healthz") != 200:
            assert proc.poll() is None, finish(proc)
            assert time.monotonic() < deadline, "api never answered /healthz"
            time.sleep(0.1)
        assert status(f"http://127.0.0.1:{port}/readyz") == 503
        time.sleep(1.5)  # let the client retry a connection or two
    finally:
        proc.send_signal(signal.SIGTERM)
        started = time.monotonic()
        out = finish(proc)
    assert proc.returncode == 0, out
    assert time.monotonic() - started < 8
