"""A destination's shaping rule: three layers merged, and the unit it is shaped as."""

from __future__ import annotations

from elemta.common.config import Route, ShapingSettings
from elemta.common.envelope import DeliveryJob
from elemta.delivery.shapingrules import Rules, destination_of


def _job(domain: str = "example.test") -> DeliveryJob:
    return DeliveryJob(
        id="Q1", dest=f"mx:{domain}", route={"kind": "mx"}, domain=domain,
        sender="a@b.test", recipients=[f"r@{domain}"], msg_seq=1,
    )  # fmt: skip


def test_rules_merge_defaults_then_the_provider_then_the_most_specific_destination() -> None:
    settings = ShapingSettings.model_validate(
        {
            "max_message_rate": 50.0,
            "providers": {
                "bigmail": {"mx_suffixes": [".bigmail.test"], "max_connections": 4},
                "google": {"max_connections": 7},  # over the shipped rule, key by key
            },
            "destinations": {
                ".example.test": {"max_connections": 3},
                "mail.example.test": {"max_connections": 1, "max_message_rate": 2.0},
                "own.test": {"max_message_rate": 9.0},
            },
        }
    )
    rules = Rules(settings)
    rule = rules.rule("a.example.test")
    assert rule is not None and (rule.max_connections, rule.max_message_rate) == (3, 50.0)
    rule = rules.rule("mail.example.test")
    assert rule is not None and (rule.max_connections, rule.max_message_rate) == (1, 2.0)
    # Every MX host under the provider's suffix: its rule, and its one shared unit.
    rule = rules.rule("x.test", ["mx1.bigmail.test", "mx2.BigMail.test."])
    assert rule is not None and (rule.dest, rule.max_connections) == ("provider:bigmail", 4)
    assert rules.rule("x.test", ["mx1.bigmail.test", "mx.elsewhere.test"]) is not None
    assert rules.rule("x.test", ["mx1.bigmail.test", "mx.elsewhere.test"]).dest == "x.test"  # type: ignore[union-attr]
    # A domain with an entry of its own keeps its own unit, over the provider's rule.
    rule = rules.rule("own.test", ["mx1.bigmail.test"])
    assert rule is not None and (rule.dest, rule.max_connections, rule.max_message_rate) == (
        "own.test",
        4,
        9.0,
    )
    # The shipped providers, with this file's keys over them.
    rule = rules.rule(
        "gmail.com", ["gmail-smtp-in.l.google.com", "alt1.gmail-smtp-in.l.google.com"]
    )
    assert rule is not None and rule.dest == "provider:google"
    assert (rule.max_connections, rule.max_messages_per_connection) == (7, 500)
    assert rule.suspend_on and rule.suspend_on[0].search("421 4.7.28 slow down")
    off = Rules(ShapingSettings(provider_defaults=False))
    assert off.rule("gmail.com", ["gmail-smtp-in.l.google.com"]) is None
    assert off.rule("example.test") is None
    relay = Route(kind="smtp", host="127.0.0.1", port=2525, mx_lookup=False)
    assert destination_of(_job(), relay) == "[127.0.0.1]:2525"
