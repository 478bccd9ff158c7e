"""``elemta serve api`` (or ``python -m elemta.api``): run the api service.

The shared :func:`elemta.common.runtime.run_service` serves health and metrics on
a separate ``http_listen`` address, which the ``[api]`` section does not have;
this command loads the configuration the same way but serves ``/healthz``,
``/readyz`` and ``/metrics`` from the API's own port.
"""

from __future__ import annotations

import asyncio
import logging
import signal

from aiohttp import web

import elemta.api
from elemta.cli.entrypoints import VerbatimCommand
from elemta.cli.service import config_option, load_or_exit, summary
from elemta.common.config import Config, split_hostport
from elemta.common.logs import setup_logging
from elemta.common.telemetry import setup_tracing, shutdown_tracing

from .app import AccessLogger, create_app

log = logging.getLogger("elemta.api")


async def serve(cfg: Config, stop: asyncio.Event | None = None) -> int:
    """Serve until SIGTERM/SIGINT (or ``stop``); 0 after a clean stop, 1 if the port is taken."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    host, port = split_hostport(cfg.api.listen)
    runner = web.AppRunner(
        create_app(cfg), handle_signals=False, access_log_class=AccessLogger, shutdown_timeout=5
    )
    await runner.setup()
    site = web.TCPSite(runner, host or None, port)
    try:
        await site.start()
    except OSError as exc:
        log.error("cannot listen on %s: %s", cfg.api.listen, exc)
        await runner.cleanup()
        return 1
    log.info("api listening on %s", ", ".join(str(a) for a in runner.addresses))
    await stop.wait()
    log.info("api stopping")
    await runner.cleanup()
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
