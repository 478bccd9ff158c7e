"""The shaping rule of a destination: what is limited, merged from three layers.

A destination is the recipient domain of an MX route, or the next hop
(``[host]:port``) of a relay route. Its rule is merged, the keys each layer sets
winning over the one before: the limits of the ``[shaping]`` section, then the
provider (``shaping.providers`` over the shipped :mod:`elemta.common.providers`)
whose ``mx_suffixes`` every MX host of the destination ends in, then the most
specific entry of ``shaping.destinations`` (the domain, then ``.parent``
entries, as transport routes match). Destinations matched to a provider that
have no entry of their own are one shaping unit, ``provider:<name>`` (the MX
"site" rollup): they share its connection leases and message schedule. How the
limits are held across processes is :mod:`.shaping`'s.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from elemta.common.config import ProviderRule, Route, ShapingRule, ShapingSettings
from elemta.common.envelope import DeliveryJob
from elemta.common.resolver import Resolver

__all__ = ["Rule", "Rules", "destination_of", "named"]

RULE_CACHE = 10000  # merged rules kept (destinations seen)


def destination_of(job: DeliveryJob, route: Route) -> str:
    """The shaping unit of a job: ``[host]:port`` for a relay, else the recipient domain."""
    if route.kind == "smtp" and not route.mx_lookup:
        return f"[{route.host}]:{route.port}"
    return (route.host if route.kind == "smtp" else job.domain).lower()


def named(dest: str) -> bool:
    """A destination with MX records to look up: not a relay's ``[host]:port``
    nor an address."""
    if dest.startswith("["):
        return False
    try:
        ipaddress.ip_address(dest)
    except ValueError:
        return True
    return False


def _under(host: str, suffixes: list[str]) -> bool:
    host = "." + host.lower().rstrip(".")
    return any(host.endswith(suffix) for suffix in suffixes)


@dataclass(frozen=True)
class Rule:
    dest: str
    max_connections: int
    max_message_rate: float
    suspend_on: tuple[re.Pattern[str], ...]
    suspend_for: float
    max_messages_per_connection: int = 0

    @property
    def limited(self) -> bool:
        return bool(
            self.max_connections
            or self.max_message_rate
            or self.suspend_on
            or self.max_messages_per_connection
        )


class Rules:
    """The merged rules of destinations, cached by destination and provider."""

    def __init__(self, settings: ShapingSettings, resolver: Resolver | None = None) -> None:
        self.settings = settings
        self.resolver = resolver
        self.providers: list[tuple[str, ProviderRule]] = list(settings.provider_rules().items())
        self._rules: dict[tuple[str, str], Rule] = {}

    async def rule_for(self, job: DeliveryJob, route: Route) -> Rule | None:
        """The job's merged rule, or None when no limit applies to it. The MX hosts
        are looked up (the transport asks the same next, from the cache) when some
        provider could match; a lookup that fails raises its
        :class:`~elemta.common.resolver.DnsError`, which is the job's result."""
        dest = destination_of(job, route)
        hosts: list[str] = []
        if self.providers and self.resolver is not None and named(dest):
            hosts = [mx.host for mx in await self.resolver.mx(dest)]
        return self.rule(dest, hosts)

    def rule(self, dest: str, mx_hosts: list[str] | tuple[str, ...] = ()) -> Rule | None:
        """The merged rule of ``dest`` with these MX hosts, or None without limits."""
        provider = self._provider(mx_hosts)
        rule = self._rules.get((dest, provider))
        if rule is None:
            if len(self._rules) >= RULE_CACHE:
                self._rules.clear()
            rule = self._rules[dest, provider] = self._merge(dest, provider)
        return rule if rule.limited else None

    def _provider(self, mx_hosts: list[str] | tuple[str, ...]) -> str:
        """The provider whose suffixes every MX host ends in ("" if none does)."""
        if not mx_hosts:
            return ""
        for name, rule in self.providers:
            if all(_under(host, rule.mx_suffixes) for host in mx_hosts):
                return name
        return ""

    def _merge(self, dest: str, provider: str) -> Rule:
        base = self.settings
        merged: dict[str, object] = {k: getattr(base, k) for k in ShapingRule.model_fields}
        unit = dest
        if provider:
            layer = dict(self.providers)[provider]
            merged.update({k: getattr(layer, k) for k in layer.model_fields_set if k in merged})
        entry = self._entry(dest)
        if entry is not None:
            merged.update({k: getattr(entry, k) for k in entry.model_fields_set})
        elif provider:
            unit = f"provider:{provider}"  # the site rollup: one set of limits for all
        rule = ShapingRule(**merged)
        return Rule(
            dest=unit,
            max_connections=rule.max_connections,
            max_message_rate=rule.max_message_rate,
            suspend_on=tuple(re.compile(p, re.IGNORECASE) for p in rule.suspend_on),
            suspend_for=rule.suspend_for,
            max_messages_per_connection=rule.max_messages_per_connection,
        )

    def _entry(self, dest: str) -> ShapingRule | None:
        table = self.settings.destinations
        if dest in table:
            return table[dest]
        labels = dest.split(".")
        for i in range(1, len(labels)):
            parent = "." + ".".join(labels[i:])
            if parent in table:
                return table[parent]
        return None
