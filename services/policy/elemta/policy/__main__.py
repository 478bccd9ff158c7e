"""``python -m elemta.policy``."""

from elemta.common.runtime import run_service

from .service import PolicyService


def main(argv: list[str] | None = None) -> int:
    return run_service("policy", PolicyService, lambda cfg: cfg.policy.http_listen, argv)


if __name__ == "__main__":
    raise SystemExit(main())
