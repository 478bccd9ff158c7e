"""``python -m elemta.ingress --config <file>``."""

from elemta.common.runtime import run_service

from .service import IngressService


def main(argv: list[str] | None = None) -> int:
    return run_service("ingress", IngressService, lambda cfg: cfg.ingress.http_listen, argv)


if __name__ == "__main__":
    raise SystemExit(main())
