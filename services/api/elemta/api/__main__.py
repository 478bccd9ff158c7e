"""``elemta serve api`` (or ``python -m elemta.api``): run the api service under uvicorn.

The shared :func:`elemta.common.runtime.run_service` serves health and metrics on
a separate ``http_listen`` address, which the ``[api]`` section does not have;
this command loads the configuration the same way but serves ``/healthz``,
``/readyz`` and ``/metrics`` from the API's own port. The socket is bound here,
not by uvicorn, so a taken port is one clear log line and exit status 1; signals
are this process's too (uvicorn's own handlers would re-raise SIGTERM on exit).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Iterator

import uvicorn

import elemta.api
from elemta.cli.entrypoints import VerbatimCommand
from elemta.cli.service import config_option, load_or_exit, summary
from elemta.common.config import Config, split_hostport
from elemta.common.logs import setup_logging
from elemta.common.telemetry import setup_tracing, shutdown_tracing

from .app import create_app

log = logging.getLogger("elemta.api")


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _bind(listen: str) -> socket.socket:
    host, port = split_hostport(listen)
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, _, _, _, addr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


async def serve(cfg: Config, stop: asyncio.Event | None = None) -> int:
    """Serve until SIGTERM/SIGINT (or ``stop``); 0 after a clean stop, 1 if the port is taken."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        sock = _bind(cfg.api.listen)
    except OSError as exc:
        log.error("cannot listen on %s: %s", cfg.api.listen, exc)
        return 1
    config = uvicorn.Config(
        create_app(cfg),
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=5,
        ssl_certfile=cfg.api.tls_cert or None,
        ssl_keyfile=cfg.api.tls_key or None,
        server_header=False,
    )
    server = _Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    log.info("api listening on %s%s", cfg.api.listen, " (TLS)" if cfg.api.tls_cert else "")
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    log.info("api stopping")
    server.should_exit = True
    await task
    stopper.cancel()
    sock.close()
    log.info("api stopped")
    return 0


def start(config_path: str | None) -> None:
    cfg = load_or_exit("elemta-api", config_path)
    setup_logging("api", cfg.telemetry.log_level, cfg.telemetry.log_format)
    setup_tracing("api", cfg.telemetry)
    try:
        code = asyncio.run(serve(cfg))
    finally:
        shutdown_tracing()
    raise SystemExit(code)


command = config_option(
    VerbatimCommand(
        "api", callback=start, help=elemta.api.__doc__, short_help=summary(elemta.api.__doc__)
    )
)

if __name__ == "__main__":
    command.main(prog_name="python -m elemta.api")
