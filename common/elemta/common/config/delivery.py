"""How mail leaves: delivery workers and TLS (``[delivery]``, smarthosts), where
it goes (``[transport]``), and the TLS reports about it (``[tlsrpt]``)."""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from .base import _Section
from .routes import parse_route, split_hostport

TLS_LEVELS = ("none", "may", "encrypt", "verify", "dane")
_LEVEL_PATTERN = "^(" + "|".join(TLS_LEVELS) + ")$"


class RelaySettings(_Section):
    """A smarthost (relay) reached by a ``smtp:[host]:port`` route: TLS and SMTP AUTH.

    Credentials come from files (a mounted Kubernetes Secret), read when a
    session opens, never from the configuration itself; they are only ever
    sent over TLS.
    """

    security_level: str = Field(
        "verify",
        pattern="^(none|may|encrypt|verify)$",
        description="TLS for this relay (Postfix levels); credentials need encrypt or verify",
    )
    implicit_tls: bool = Field(
        False, description="TLS from the first byte (SMTPS, port 465) instead of STARTTLS"
    )
    ca_file: str = Field("", description="CA bundle to verify the relay; empty: tls_ca_file")
    username_file: str = Field("", description="File holding the SMTP AUTH user name")
    password_file: str = Field("", description="File holding the SMTP AUTH password")

    @model_validator(mode="after")
    def _auth_over_tls(self) -> RelaySettings:
        if bool(self.username_file) != bool(self.password_file):
            raise ValueError("username_file and password_file go together")
        if self.username_file and self.security_level not in ("encrypt", "verify"):
            raise ValueError("credentials are only sent over TLS: use encrypt or verify")
        return self


class DeliverySettings(_Section):
    """Delivery workers."""

    http_listen: str = Field("127.0.0.1:9104", description="health and metrics address")
    concurrency: int = Field(64, ge=1, description="Jobs in flight per process")
    connect_timeout: float = Field(30.0, gt=0, description="Seconds to connect to a peer")
    command_timeout: float = Field(300.0, gt=0, description="Seconds per SMTP command")
    ack_wait: float = Field(60.0, ge=5, description="Seconds before an unacked job is redelivered")
    idle_connection_timeout: float = Field(
        10.0, ge=0, description="Seconds a reused connection may sit idle"
    )
    max_connections_per_destination: int = Field(8, ge=1, description="Open SMTP sessions")
    maildir_root: str = Field("", description="Maildir base; empty: <state_dir>/mail")
    tls_security_level: str = Field(
        "may",
        pattern=_LEVEL_PATTERN,
        description="Default TLS level (Postfix smtp_tls_security_level): none, may, encrypt,"
        " verify, dane",
    )
    tls_policy: dict[str, str] = Field(
        default_factory=dict,
        description="Per destination TLS level: recipient domain, .subdomain or [host]:port",
    )
    tls_ca_file: str = Field(
        "", description="CA bundle for verify, MTA-STS and policy fetches; empty: the system's"
    )
    mta_sts: bool = Field(True, description="Honour the MTA-STS policies of recipient domains")
    mta_sts_fetch_timeout: float = Field(20.0, gt=0, description="Seconds to fetch a policy")
    mta_sts_port: int = Field(
        443, ge=1, le=65535, description="HTTPS port of the mta-sts.<domain> policy hosts"
    )
    relays: dict[str, RelaySettings] = Field(
        default_factory=dict, description="Smarthosts by next hop ([host]:port): TLS, AUTH"
    )
    smtp_port: int = Field(25, ge=1, le=65535, description="Port for MX delivery")
    helo_name: str = Field("", description="EHLO name; empty: server.hostname")
    drain_timeout: float = Field(
        20.0,
        gt=0,
        description="Seconds running attempts get on SIGTERM; the rest go back to the queue",
    )

    @field_validator("tls_policy")
    @classmethod
    def _tls_policy(cls, v: dict[str, str]) -> dict[str, str]:
        out = {}
        for dest, level in v.items():
            level = level.strip().lower()
            if level not in TLS_LEVELS:
                raise ValueError(f"{dest!r}: TLS level must be one of {', '.join(TLS_LEVELS)}")
            out[dest.strip().lower()] = level
        return out

    @field_validator("relays")
    @classmethod
    def _relays(cls, v: dict[str, RelaySettings]) -> dict[str, RelaySettings]:
        out = {}
        for hop, relay in v.items():
            host, port = split_hostport(hop if ":" in hop.rpartition("]")[2] else f"{hop}:25")
            out[f"[{host.lower()}]:{port}"] = relay
        return out


class TransportSettings(_Section):
    """Postfix-style ``transport_maps``: domain -> route.

    Routes: ``smtp:[host]:port`` (relay to that host, no MX lookup), ``smtp:host``
    (MX lookup of host), ``lmtp:host:port``, ``local`` (Maildir), ``mx`` (default).
    A key starting with a dot matches subdomains; ``*`` matches everything else.
    """

    routes: dict[str, str] = Field(default_factory=dict)

    @field_validator("routes")
    @classmethod
    def _routes(cls, v: dict[str, str]) -> dict[str, str]:
        out = {}
        for domain, route in v.items():
            try:
                parse_route(route)
            except ValueError as exc:
                raise ValueError(f"route for {domain!r}: {exc}") from None
            out[domain.strip().lower()] = route.strip()
        return out


class TlsRptSettings(_Section):
    """TLS reporting (RFC 8460): daily reports to the domains whose policies applied."""

    enabled: bool = Field(False, description="Count policy results and send daily reports")
    organization: str = Field("", description="organization-name of reports; empty: hostname")
    contact: str = Field("", description="contact-info of reports; empty: postmaster@hostname")
    sender: str = Field(
        "", description="Envelope and From: of mailed reports; empty: noreply-smtp-tls-reporting@"
    )
    send_delay: float = Field(
        900.0, ge=0, description="Seconds after the end of a UTC day before its reports go out"
    )
