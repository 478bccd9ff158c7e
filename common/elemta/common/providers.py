"""Shipped traffic-shaping rules for large mailbox providers (``[shaping]``).

A provider is recognised by the host names of a destination's MX records: a
destination whose MX hosts all end in one of a provider's ``mx_suffixes`` gets
the provider's rule (merged over the ``[shaping]`` defaults, under a
``shaping.destinations`` entry), and every such destination without an entry of
its own shares one set of limits: the MX "site" rollup, as KumoMTA's
``shaping.toml`` does it. Two domains hosted at one provider thus share its
connection limit.

These figures are Elemta's conservative starting values, not numbers the
providers publish or promise: none of them publishes connection or rate limits
for senders, and what they accept depends on the sender's reputation. The
connection limits are kept low enough that one sender's queue cannot look like
a flood, and a connection is renewed after a few hundred messages. The reply
patterns are the deferrals these providers document for senders they throttle
(Google's SMTP error reference: ``421 4.7.28``; Microsoft's Outlook.com
postmaster pages: ``4.7.650``; Yahoo's sender hub: ``TSS04``); such a reply
suspends the recipient domain for ``suspend_for`` seconds. Operators override
any key by provider name in ``[shaping.providers.<name>]``, or switch the whole
set off with ``shaping.provider_defaults = false``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["SHIPPED_PROVIDERS"]

SHIPPED_PROVIDERS: dict[str, dict[str, Any]] = {
    "google": {
        "mx_suffixes": [".google.com", ".googlemail.com"],
        "max_connections": 20,
        "max_messages_per_connection": 500,
        "suspend_on": [r"^421 4\.7\.28 "],
        "suspend_for": 600.0,
    },
    "microsoft": {
        "mx_suffixes": [".outlook.com"],
        "max_connections": 10,
        "max_messages_per_connection": 200,
        "suspend_on": [r"^4\d\d 4\.7\.650 "],
        "suspend_for": 600.0,
    },
    "yahoo": {
        "mx_suffixes": [".yahoodns.net"],
        "max_connections": 10,
        "max_messages_per_connection": 200,
        "suspend_on": [r"\[TSS0\d\]"],
        "suspend_for": 900.0,
    },
    "apple": {
        "mx_suffixes": [".mail.icloud.com"],
        "max_connections": 10,
        "max_messages_per_connection": 200,
    },
}
