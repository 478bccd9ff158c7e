"""``python -m elemta.policy``."""

from elemta.common.runtime import parse_args, run_service

from .service import PolicyService


def main(argv: list[str] | None = None) -> int:
    # The service re-reads the same file on SIGHUP (plugins and milters).
    path = parse_args("policy", argv).config
    return run_service(
        "policy",
        lambda cfg, health, stop: PolicyService(cfg, health, stop, config_path=path),
        lambda cfg: cfg.policy.http_listen,
        argv,
    )


if __name__ == "__main__":
    raise SystemExit(main())
