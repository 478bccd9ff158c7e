"""The policy process: one resolver, one cache, for every check."""

from __future__ import annotations

from elemta.common.config import load_config
from elemta.common.resolver import Resolver
from elemta.policy.authcheck import Authentication


def test_the_policy_checks_share_the_one_resolver_of_the_process() -> None:
    cfg = load_config(env={})
    shared = Resolver(cfg.dns)
    auth = Authentication(cfg, shared)
    assert auth.spf is not None and auth.dkim is not None and auth.dmarc is not None
    assert auth.spf._resolver is shared
    assert auth.dmarc.resolver is shared
    assert auth.dkim._lookup.resolver is shared  # type: ignore[attr-defined]
