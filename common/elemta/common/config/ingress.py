"""Who this MTA is (``[server]``) and how it takes mail (``[ingress]``, its listeners)."""

from __future__ import annotations

import ipaddress
from typing import Any

from pydantic import Field, field_validator, model_validator

from .base import _listen, _Section


class ServerSettings(_Section):
    """Who this MTA is and for whom it takes mail."""

    hostname: str = Field("localhost", description="Name in the banner, EHLO and Received:")
    local_domains: list[str] = Field(
        default_factory=lambda: ["localhost"],
        description="Domains whose mail is delivered to local mailboxes (Maildir)",
    )
    relay_domains: list[str] = Field(
        default_factory=list,
        description="Domains accepted from anyone and forwarded by the transport table or MX"
        " (an inbound gateway or backup MX, like Postfix relay_domains)",
    )
    trusted_networks: list[str] = Field(
        default_factory=lambda: ["127.0.0.0/8", "::1/128"],
        description="Client networks allowed to relay to any destination",
    )
    state_dir: str = Field("var", description="Where local state (TLS cert, Maildirs) lives")
    event_loop: str = Field(
        "uvloop",
        pattern="^(uvloop|asyncio)$",
        description="Event loop of every service: uvloop (libuv, faster) or asyncio's own",
    )

    @field_validator("local_domains", "relay_domains")
    @classmethod
    def _lower(cls, v: list[str]) -> list[str]:
        return [d.strip().lower().rstrip(".") for d in v if d.strip()]

    @field_validator("trusted_networks")
    @classmethod
    def _networks(cls, v: list[str]) -> list[str]:
        for net in v:
            ipaddress.ip_network(net.strip(), strict=False)
        return [n.strip() for n in v]


_TLS_LEVEL = "^(minimum|recommended|strict|maximum)$"


class ListenerSettings(_Section):
    """One more SMTP listener beside ``ingress.listen`` (the MTA port)."""

    address: str = Field(description="host:port")
    role: str = Field(
        "submission",
        pattern="^(mta|submission|submissions)$",
        description="mta: port 25 style; submission: 587, STARTTLS, AUTH required before MAIL;"
        " submissions: 465, implicit TLS (RFC 8314), AUTH required",
    )
    auth: bool = Field(
        True,
        description="Offer AUTH (inside TLS only); unset: submission and submissions do, mta not",
    )
    tls_level: str = Field(
        "recommended", pattern=_TLS_LEVEL, description="minimum, recommended, strict or maximum"
    )
    tls_cert: str = Field("", description="PEM certificate; empty: ingress.tls_cert")
    tls_key: str = Field("", description="Key of tls_cert")
    proxy_protocol: bool = Field(
        False, description="Read a PROXY v1/v2 header first, from ingress.proxy_networks only"
    )

    _v_address = field_validator("address")(_listen)

    @model_validator(mode="before")
    @classmethod
    def _auth_by_role(cls, data: Any) -> Any:
        if isinstance(data, dict) and "auth" not in data:
            return {**data, "auth": data.get("role", "submission") != "mta"}
        return data

    @model_validator(mode="after")
    def _tls_pair(self) -> ListenerSettings:
        if self.tls_key and not self.tls_cert:
            raise ValueError("tls_key needs tls_cert")
        return self

    @property
    def offers_auth(self) -> bool:
        return self.auth

    @property
    def requires_auth(self) -> bool:
        return self.role != "mta"


def _default_listeners() -> list[ListenerSettings]:
    return [
        ListenerSettings(address="127.0.0.1:2587", role="submission"),
        ListenerSettings(address="127.0.0.1:2465", role="submissions"),
    ]


class IngressSettings(_Section):
    """The SMTP listeners."""

    listen: str = Field("127.0.0.1:2525", description="SMTP address")
    http_listen: str = Field("127.0.0.1:9101", description="health and metrics address")
    max_message_size: int = Field(25 * 1024 * 1024, ge=1024, description="SIZE limit, bytes")
    max_recipients: int = Field(100, ge=1, description="RCPT TO per transaction")
    command_timeout: float = Field(300.0, gt=0, description="Idle seconds before 421")
    data_timeout: float = Field(600.0, gt=0, description="Seconds to receive DATA")
    max_line_length: int = Field(998, ge=80, description="Text line limit, without CRLF")
    tls_cert: str = Field("", description="PEM certificate; empty: self-signed in state_dir")
    tls_key: str = Field("", description="PEM key matching tls_cert")
    tls_level: str = Field(
        "recommended",
        pattern=_TLS_LEVEL,
        description="TLS of listen: minimum, recommended, strict or maximum (docs/decisions.md)",
    )
    policy_timeout: float = Field(10.0, gt=0, description="Seconds to wait for a policy verdict")
    drain_timeout: float = Field(30.0, ge=0, description="Seconds sessions get on SIGTERM")
    reuse_port: bool = Field(True, description="SO_REUSEPORT, so several processes share the port")
    listeners: list[ListenerSettings] = Field(
        default_factory=_default_listeners,
        description="Listeners beside listen (the MTA port): submission and submissions",
    )
    auth_on_mta: bool = Field(False, description="Offer AUTH (inside TLS) on listen too")
    proxy_protocol: bool = Field(
        False, description="listen reads a PROXY v1/v2 header first (behind a load balancer)"
    )
    client_connection_limit: int = Field(
        50, ge=0, description="Open connections per client address (IPv6: /64); 0: no limit"
    )
    client_connection_rate: int = Field(
        0, ge=0, description="New connections per client address and minute; 0: no limit"
    )
    client_message_rate: int = Field(
        0, ge=0, description="MAIL FROMs per client address and minute; 0: no limit"
    )
    client_recipient_rate: int = Field(
        0, ge=0, description="RCPT TOs per client address and minute; 0: no limit"
    )
    client_limits_exempt_trusted: bool = Field(
        True, description="Clients in server.trusted_networks are not limited"
    )
    client_name_lookup: bool = Field(
        True, description="Name clients by forward-confirmed reverse DNS (Received:, policy)"
    )
    client_name_timeout: float = Field(
        2.0, gt=0, description="Seconds the name may hold up MAIL or the end of DATA"
    )
    proxy_networks: list[str] = Field(
        default_factory=list,
        description="Load balancer networks whose PROXY headers are believed; others are refused",
    )
    auth_failure_delay: float = Field(
        1.0, ge=0, description="Seconds added per counted failure before 535 (slows guessing)"
    )
    auth_max_failures: int = Field(
        3, ge=1, description="Failed AUTH commands in one session before 421 and close"
    )
    trusted_policy: str = Field(
        "auto",
        pattern="^(auto|always)$",
        description="auto: ask policy about trusted mail only when something applies to it "
        "(DKIM keys, plugins, milters); always: ask for every message",
    )

    _v_listen = field_validator("listen", "http_listen")(_listen)

    @field_validator("proxy_networks")
    @classmethod
    def _proxy_networks(cls, v: list[str]) -> list[str]:
        for net in v:
            ipaddress.ip_network(net.strip(), strict=False)
        return [n.strip() for n in v]

    @model_validator(mode="after")
    def _proxy_needs_networks(self) -> IngressSettings:
        uses = self.proxy_protocol or any(li.proxy_protocol for li in self.listeners)
        if uses and not self.proxy_networks:
            raise ValueError("proxy_protocol needs proxy_networks (the load balancers' networks)")
        return self
