"""Routing: local domains, the transport table, MX, and grouping into jobs."""

from __future__ import annotations

from elemta.common.config import Config, Route
from elemta.common.routing import Router


def router(routes: dict[str, str] | None = None) -> Router:
    return Router(
        Config.model_validate(
            {
                "server": {"local_domains": ["local.test", "Other.Local.TEST"]},
                "transport": {"routes": routes or {}},
            }
        )
    )


def test_local_domain_routes_to_local() -> None:
    r = router({"local.test": "smtp:[relay.test]:25"})
    assert r.route("bob@local.test") == Route(kind="local")
    assert r.route("Bob@OTHER.local.test") == Route(kind="local")


def test_unlisted_domain_routes_to_its_own_mx() -> None:
    assert router().route("bob@Example.ORG") == Route(kind="mx", host="example.org")


def test_transport_exact_domain_wins_over_parent_and_wildcard() -> None:
    r = router(
        {
            "example.org": "smtp:[exact.test]:2525",
            ".example.org": "smtp:[parent.test]",
            "*": "smtp:[star.test]",
        }
    )
    assert r.route("bob@example.org") == Route(
        kind="smtp", host="exact.test", port=2525, mx_lookup=False
    )


def test_parent_key_matches_subdomains_longest_first_but_not_the_domain_itself() -> None:
    r = router({".example.org": "smtp:[parent.test]", ".b.example.org": "lmtp:lmtp.test:24"})
    assert r.route("x@a.example.org").host == "parent.test"
    assert r.route("x@a.b.example.org") == Route(
        kind="lmtp", host="lmtp.test", port=24, mx_lookup=False
    )
    assert r.route("x@b.example.org").host == "parent.test"
    assert r.route("x@example.org") == Route(kind="mx", host="example.org")


def test_wildcard_catches_every_unlisted_domain() -> None:
    r = router({"*": "smtp:smarthost.test", "direct.test": "mx"})
    assert r.route("x@anywhere.test") == Route(kind="smtp", host="smarthost.test", port=25)
    assert r.route("x@anywhere.test").mx_lookup is True
    assert r.route("x@direct.test") == Route(kind="mx", host="direct.test")
    assert r.route("x@local.test") == Route(kind="local")


def test_recipients_of_one_domain_become_one_destination() -> None:
    dests = router().plan(["a@one.test", "b@two.test", "c@ONE.test", "a@one.test"])
    assert [(d.key, d.domain, d.recipients) for d in dests] == [
        ("mx:one.test", "one.test", ["a@one.test", "c@ONE.test"]),
        ("mx:two.test", "two.test", ["b@two.test"]),
    ]


def test_relay_route_groups_two_domains_into_one_destination() -> None:
    r = router({"one.test": "smtp:[relay.test]:2525", "two.test": "smtp:[relay.test]:2525"})
    dests = r.plan(["a@one.test", "b@two.test", "c@local.test", "d@other.local.test"])
    assert [(d.key, d.domain, d.recipients) for d in dests] == [
        ("smtp:relay.test:2525:0", "one.test", ["a@one.test", "b@two.test"]),
        ("local", "local.test", ["c@local.test", "d@other.local.test"]),
    ]
