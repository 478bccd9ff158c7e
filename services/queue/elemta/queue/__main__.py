"""``python -m elemta.queue``."""

from elemta.common.runtime import run_service

from .service import QueueService


def main(argv: list[str] | None = None) -> int:
    return run_service("queue", QueueService, lambda cfg: cfg.queue.http_listen, argv)


if __name__ == "__main__":
    raise SystemExit(main())
