"""How every service starts and stops: config, logs, tracing, health, signals.

A service provides an object with ``start()``, ``stop()`` and readiness checks;
:func:`run_service` loads the configuration (a file path, else ``ELEMTA_CONFIG``),
reports a bad configuration on stderr with exit status 78 (EX_CONFIG, as Postfix's
daemons do for fatal configuration errors), serves health and metrics, and turns
SIGTERM/SIGINT into a graceful drain that ends within the service's
``drain_timeout`` whatever happens -- also while NATS is unreachable, before or
after the service started. ``elemta serve <service>`` calls it
(:func:`elemta.cli.service.service_command`).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Protocol

from .config import Config, ConfigError, load_config
from .health import HealthServer
from .logs import setup_logging
from .telemetry import setup_tracing, shutdown_tracing

__all__ = ["EX_CONFIG", "Factory", "Service", "run_service", "wait_or_stop"]

log = logging.getLogger(__name__)

EX_CONFIG = 78
DEFAULT_DRAIN_TIMEOUT = 10.0  # seconds, for a service whose section has no drain_timeout


class Service(Protocol):
    async def start(self) -> None: ...
    async def stop(self) -> None: ...


Factory = Callable[[Config, HealthServer, asyncio.Event], Service]


def run_service(
    name: str,
    factory: Factory,
    http_listen: Callable[[Config], str],
    config_path: str | None = None,
) -> int:
    """Run one service until SIGTERM/SIGINT; the process exit status."""
    try:
        cfg = load_config(config_path)
    except ConfigError as exc:
        print(f"elemta-{name}: fatal: {exc}", file=sys.stderr)
        return EX_CONFIG
    setup_logging(name, cfg.telemetry.log_level, cfg.telemetry.log_format)
    setup_tracing(name, cfg.telemetry)
    try:
        with asyncio.Runner(loop_factory=event_loop_factory(cfg.server.event_loop)) as runner:
            return runner.run(_main(name, cfg, factory, http_listen(cfg)))
    finally:
        shutdown_tracing()


def event_loop_factory(kind: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop (libuv) unless ``server.event_loop = "asyncio"``: the services
    spend much of their CPU in the loop's socket and callback handling, which uvloop
    does in C. None: asyncio's own loop."""
    if kind == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:  # pragma: no cover - a platform without a uvloop wheel
        return None
    return uvloop.new_event_loop


async def _main(
    name: str,
    cfg: Config,
    factory: Factory,
    listen: str,
) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    health = HealthServer(listen)
    # Not ready from the moment SIGTERM arrives, before and during the drain, so
    # that a Kubernetes Service (or a load balancer) stops sending new clients first.
    health.add_check("draining", lambda: not stop.is_set())
    port = await health.start()
    service = factory(cfg, health, stop)
    log.info("%s starting; health on %s:%d", name, health.host, port)
    # Start while listening for SIGTERM: a service waiting for NATS must still stop.
    starting = asyncio.create_task(service.start(), name=f"{name}-start")
    signalled = asyncio.create_task(stop.wait())
    await asyncio.wait({starting, signalled}, return_when=asyncio.FIRST_COMPLETED)
    if starting.done() and not stop.is_set() and starting.exception() is not None:
        log.error("%s failed to start", name, exc_info=starting.exception())
        signalled.cancel()
        await health.stop()
        return 1
    if starting.done() and not starting.cancelled() and starting.exception() is None:
        settle_gc()
    await signalled
    drain = drain_timeout(cfg, name)
    deadline = loop.time() + drain
    log.info("%s draining (at most %gs)", name, drain)
    if not starting.done():
        log.info("%s stopped while starting (is NATS reachable?)", name)
        starting.cancel()
        await asyncio.wait({starting}, timeout=max(0.1, deadline - loop.time()))
    stopping = asyncio.create_task(service.stop(), name=f"{name}-stop")
    await asyncio.wait({stopping}, timeout=max(0.1, deadline - loop.time()))
    if not (starting.done() and stopping.done()):
        # Something ignores cancellation (a connection attempt, a stuck peer): the
        # drain timeout is a promise to the supervisor, so leave without it.
        log.error("%s did not stop within %gs; exiting anyway", name, drain)
        logging.shutdown()
        os._exit(1)
    code = 0
    if not stopping.cancelled() and stopping.exception() is not None:
        log.error("%s failed while stopping", name, exc_info=stopping.exception())
        code = 1
    await health.stop()
    log.info("%s stopped", name)
    return code


def settle_gc() -> None:
    """Once a service has started: what it loaded (modules, configuration, clients)
    lives as long as the process, so the collector stops scanning it (``gc.freeze``),
    and collects the young generation every 10,000 allocations instead of 700. A
    full collection of everything loaded cost more CPU per message than the message's
    own short-lived objects; cyclic garbage is still collected, a little later."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)


def drain_timeout(cfg: Config, name: str) -> float:
    """``<service>.drain_timeout`` when the service's section has one, else 10 s."""
    return float(getattr(getattr(cfg, name, None), "drain_timeout", DEFAULT_DRAIN_TIMEOUT))


async def wait_or_stop(aw: Awaitable[object], stop: asyncio.Event) -> bool:
    """Await ``aw`` unless ``stop`` is set first; True when ``aw`` finished."""
    task = asyncio.ensure_future(aw)
    stopper = asyncio.ensure_future(stop.wait())
    done, _ = await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    stopper.cancel()
    if task not in done:
        task.cancel()
        return False
    return True
