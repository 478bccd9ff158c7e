"""Traffic shaping (``[shaping]``): limits per destination and per mailbox provider."""

from __future__ import annotations

import re

from pydantic import Field, field_validator

from ..providers import SHIPPED_PROVIDERS
from .base import _Section


class ShapingRule(_Section):
    """Limits for one destination, shared by every delivery process (0: no limit)."""

    max_connections: int = Field(
        0, ge=0, description="Connections open at once to the destination; 0: no limit"
    )
    max_message_rate: float = Field(
        0.0, ge=0, description="Messages per second to the destination; 0: no limit"
    )
    suspend_on: list[str] = Field(
        default_factory=list,
        description="Reply patterns (regular expressions on 'code enhanced text') that suspend"
        " the destination",
    )
    suspend_for: float = Field(300.0, gt=0, description="Seconds a matching reply suspends it")
    max_messages_per_connection: int = Field(
        0, ge=0, description="Messages one connection carries before it is closed; 0: no limit"
    )

    @field_validator("suspend_on")
    @classmethod
    def _patterns(cls, v: list[str]) -> list[str]:
        for pattern in v:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"bad pattern {pattern!r}: {exc}") from None
        return v


class ProviderRule(ShapingRule):
    """Limits for a mailbox provider, applied to every destination whose MX hosts
    all end in one of ``mx_suffixes`` (see :mod:`elemta.common.providers`)."""

    mx_suffixes: list[str] = Field(
        default_factory=list, description="MX host name suffixes, e.g. .google.com"
    )

    @field_validator("mx_suffixes")
    @classmethod
    def _suffixes(cls, v: list[str]) -> list[str]:
        out = []
        for suffix in v:
            suffix = suffix.strip().lower().rstrip(".")
            if not suffix.strip("."):
                raise ValueError("an MX suffix must name a domain, e.g. .google.com")
            out.append(suffix if suffix.startswith(".") else "." + suffix)
        return out


class ShapingSettings(ShapingRule):
    """Traffic shaping per destination (recipient domain, ``.parent`` domain, or the
    ``[host]:port`` of a relay), held across every delivery process. Rules merge
    in order, each overriding the keys it sets: the limits of this section, then
    the provider whose MX suffixes match the destination's MX hosts, then the
    destination's ``destinations`` entry. Destinations at one provider without
    an entry of their own share the provider's limits."""

    provider_defaults: bool = Field(
        True, description="Apply the shipped provider rules (elemta.common.providers)"
    )
    providers: dict[str, ProviderRule] = Field(
        default_factory=dict,
        description="Provider rules by name, over the shipped ones of that name key by key",
    )
    destinations: dict[str, ShapingRule] = Field(
        default_factory=dict, description="Rules by domain, .parent domain or [host]:port"
    )
    slot_wait: float = Field(
        2.0, gt=0, description="Seconds a job may wait for a slot before it is handed back"
    )
    max_backoff: float = Field(
        30.0, gt=0, description="Most seconds a job without a slot stays handed back"
    )
    lease_idle_timeout: float = Field(
        1.0,
        gt=0,
        description="Seconds an idle session to a destination with a connection limit keeps"
        " its connection (and lease) before it is closed",
    )

    @field_validator("destinations")
    @classmethod
    def _destinations(cls, v: dict[str, ShapingRule]) -> dict[str, ShapingRule]:
        return {dest.strip().lower(): rule for dest, rule in v.items()}

    @field_validator("providers")
    @classmethod
    def _providers(cls, v: dict[str, ProviderRule]) -> dict[str, ProviderRule]:
        return {name.strip().lower(): rule for name, rule in v.items()}

    def provider_rules(self) -> dict[str, ProviderRule]:
        """The providers in force: the shipped ones (unless ``provider_defaults`` is
        off) with this file's ``providers`` merged over them by name."""
        rules: dict[str, ProviderRule] = {}
        if self.provider_defaults:
            rules = {n: ProviderRule.model_validate(r) for n, r in SHIPPED_PROVIDERS.items()}
        for name, rule in self.providers.items():
            base = rules.get(name)
            rules[name] = (
                rule
                if base is None
                else base.model_copy(update={k: getattr(rule, k) for k in rule.model_fields_set})
            )
        return {n: r for n, r in rules.items() if r.mx_suffixes}

    @property
    def active(self) -> bool:
        """Some destination has a limit: the shared state is needed."""
        rules: list[ShapingRule] = [
            self,
            *self.destinations.values(),
            *self.provider_rules().values(),
        ]
        return any(
            r.max_connections or r.max_message_rate or r.suspend_on or r.max_messages_per_connection
            for r in rules
        )
