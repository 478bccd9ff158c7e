"""``python -m elemta.delivery [--config FILE]``: run one delivery worker process."""

from __future__ import annotations

import asyncio

from elemta.common.config import Config
from elemta.common.health import HealthServer
from elemta.common.runtime import run_service

from .service import DeliveryService


def factory(cfg: Config, health: HealthServer, stop_event: asyncio.Event) -> DeliveryService:
    return DeliveryService(cfg, health, stop_event)


def main(argv: list[str] | None = None) -> int:
    return run_service("delivery", factory, lambda cfg: cfg.delivery.http_listen, argv)


if __name__ == "__main__":
    raise SystemExit(main())
