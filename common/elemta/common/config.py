"""Configuration: the model, one section per part of the system.

Every service reads the same configuration and takes the sections it needs.
Values are typed and validated at start-up; a bad file or value raises
:class:`ConfigError` naming the key and the reason, and the service stops before
it binds a port. With no file at all the embedded defaults run the whole system
on localhost. Where values come from (a TOML file, ``ELEMTA_<SECTION>_<KEY>``
variables, ``*_FILE`` variables and a secrets directory) is
:mod:`elemta.common.settings`.

A new key is a field of its section with a default and a ``description``, and a
line in ``elemta.example.toml``; it is settable from the environment at once.
A new section is a ``_Section`` subclass and a field of :class:`Config`; its name
must not contain ``_`` (the variable ``ELEMTA_<SECTION>_<KEY>`` splits at the
first ``_`` after the prefix).
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from .providers import SHIPPED_PROVIDERS

__all__ = [
    "ApiSettings",
    "DkimKey",
    "PluginSettings",
    "Config",
    "ConfigError",
    "DeliverySettings",
    "DnsSettings",
    "IngressSettings",
    "ListenerSettings",
    "MilterSettings",
    "NatsSettings",
    "PolicySettings",
    "PrioritySettings",
    "QueueSettings",
    "RelaySettings",
    "Route",
    "ProviderRule",
    "ShapingRule",
    "ShapingSettings",
    "ServerSettings",
    "TelemetrySettings",
    "TlsRptSettings",
    "UsersSettings",
    "TransportSettings",
    "load_config",
    "parse_route",
    "redacted",
    "Secret",
]


Secret = SecretStr
"""The type of a key that holds a password or token: never logged, shown as ``***``."""


class ConfigError(Exception):
    """The configuration cannot be used; the message names the key and the reason."""


_HOSTPORT = re.compile(r"^(?P<host>\[[^\]]+\]|[^:\s]+|)(?::(?P<port>\d{1,5}))$")


def split_hostport(value: str) -> tuple[str, int]:
    """Split ``host:port`` / ``[v6]:port`` into its parts."""
    m = _HOSTPORT.match(value.strip())
    if not m:
        raise ValueError(f"expected host:port, got {value!r}")
    host = m.group("host").strip("[]")
    port = int(m.group("port"))
    if not 0 <= port <= 65535:
        raise ValueError(f"port out of range in {value!r}")
    return host, port


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _listen(value: str) -> str:
    split_hostport(value)
    return value


Listen = Annotated[str, Field(description="host:port; port 0 picks a free one")]


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


class NatsSettings(_Section):
    """The JetStream connection every service shares."""

    url: str = Field("nats://127.0.0.1:4222", description="NATS server URL(s), comma-separated")
    publish_timeout: float = Field(5.0, gt=0, description="Seconds to wait for a PubAck")
    connect_timeout: float = Field(2.0, gt=0, description="Seconds per connection attempt")
    replicas: int = Field(1, ge=1, le=5, description="Stream replicas (3 in a cluster)")
    inline_body_limit: int = Field(
        4 * 1024 * 1024,
        ge=1024,
        description="Bodies above this many bytes go to the Object Store, not the stream",
    )
    tls_ca: str = Field(
        "", description="CA (PEM) the server's certificate is checked with; set: TLS"
    )
    tls_cert: str = Field("", description="Client certificate (PEM) for servers that ask one")
    tls_key: str = Field("", description="Key of tls_cert")
    user: str = Field("", description="User name (with password)")
    password: Secret = Field(Secret(""), description="Password of user")
    token: Secret = Field(
        Secret(""), description="Authentication token (instead of user and password)"
    )
    creds_file: str = Field(
        "", description=".creds file (JWT and NKey seed); re-read at each reconnection"
    )

    @model_validator(mode="after")
    def _one_credential(self) -> NatsSettings:
        kinds = [k for k in ("user", "token", "creds_file") if getattr(self, k)]
        if len(kinds) > 1:
            raise ValueError(f"set one of user, token, creds_file (got {', '.join(kinds)})")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ValueError("tls_cert and tls_key go together")
        return self


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


class DkimKey(_Section):
    """One DKIM signing key; the file can be a mounted Kubernetes Secret."""

    domain: str
    selector: str
    algorithm: str = Field("rsa-sha256", pattern="^(rsa-sha256|ed25519-sha256)$")
    key_file: str

    @field_validator("domain")
    @classmethod
    def _domain(cls, v: str) -> str:
        return v.strip().lower().rstrip(".")


class PluginSettings(_Section):
    """One content scanner run at end of DATA."""

    name: str = Field(description="clamav, spamd, rspamd, or an elemta.policy.plugins entry point")
    order: int = Field(100, description="Lower runs first")
    timeout: float = Field(30.0, gt=0, description="Seconds before the plugin counts as failed")
    fail: str = Field(
        "",
        pattern="^(open|closed|)$",
        description="open: accept on error; closed: 451 4.7.1; empty: the plugin's default",
    )
    options: dict[str, Any] = Field(
        default_factory=dict, description="Plugin options, e.g. address = '127.0.0.1:3310'"
    )
    concurrency: int = Field(
        0, ge=0, description="Calls at once; more wait within the timeout; 0: no limit"
    )
    isolation: str = Field(
        "none",
        pattern="^(none|process)$",
        description="process: run the plugin in worker processes with the limits below",
    )
    workers: int = Field(1, ge=1, description="Worker processes (isolation = process)")
    cpu_seconds: float = Field(
        10.0, gt=0, description="CPU seconds per call in a worker; past it the worker is replaced"
    )
    memory_mb: int = Field(512, ge=64, description="Address-space limit of a worker, MiB")


_MILTER_ACTION = "^(accept|reject|tempfail|quarantine)$"


class MilterSettings(_Section):
    """One milter (Postfix ``smtpd_milters`` entry); unset keys take ``policy.milter_*``."""

    address: str = Field(description="inet:host:port or unix:/path")
    name: str = Field("", description="Name in logs and metrics; empty: the address")
    default_action: str | None = Field(
        None, pattern=_MILTER_ACTION, description="When the milter fails"
    )
    protocol: int | None = Field(None, description="Milter protocol version")
    connect_timeout: float | None = Field(None, gt=0)
    command_timeout: float | None = Field(None, gt=0)
    content_timeout: float | None = Field(None, gt=0)

    @field_validator("address")
    @classmethod
    def _address(cls, v: str) -> str:
        kind, sep, rest = v.strip().partition(":")
        if not sep or not rest or kind not in ("inet", "inet6", "unix", "local"):
            raise ValueError(f"expected inet:host:port or unix:/path, got {v!r}")
        if kind.startswith("inet"):
            split_hostport(rest)
        return v.strip()

    @field_validator("protocol")
    @classmethod
    def _protocol(cls, v: int | None) -> int | None:
        if v is not None and v not in (2, 3, 4, 6):
            raise ValueError("milter protocol must be 2, 3, 4 or 6")
        return v


class PolicySettings(_Section):
    """The policy gRPC service, how clients reach it, and which checks it runs.

    Mail from ``server.trusted_networks`` is our own outbound mail: it is signed
    (``dkim_keys``) rather than checked. Everything else is checked.
    """

    listen: str = Field("127.0.0.1:7071", description="gRPC address the service binds")
    address: str = Field("127.0.0.1:7071", description="gRPC address clients call")
    http_listen: str = Field("127.0.0.1:9102", description="health and metrics address")
    authserv_id: str = Field(
        "", description="authserv-id of Authentication-Results; empty: server.hostname"
    )
    spf: bool = Field(True, description="Check SPF of inbound mail")
    dkim_verify: bool = Field(True, description="Verify DKIM signatures of inbound mail")
    arc_verify: bool = Field(True, description="Verify the ARC chain of inbound mail")
    dmarc: str = Field(
        "enforce",
        pattern="^(enforce|monitor|off)$",
        description="enforce: p=reject -> 550 5.7.1, p=quarantine -> hold; monitor: header only",
    )
    dkim_keys: list[DkimKey] = Field(
        default_factory=list, description="Signing keys for outbound mail, per domain"
    )
    arc_seal_domain: str = Field(
        "", description="d= of the ARC sets added to mail forwarded for relay_domains; empty: off"
    )
    arc_seal_selector: str = Field("", description="s= of the ARC sets")
    arc_seal_key_file: str = Field("", description="RSA key (PEM) of the ARC sets")
    dnsbl_ip_zones: list[str] = Field(
        default_factory=list, description="DNSBL zones for client IPs (e.g. zen.spamhaus.org)"
    )
    dnsbl_domain_zones: list[str] = Field(
        default_factory=list, description="DNSBL zones for sender domains (e.g. dbl.spamhaus.org)"
    )
    greylist: bool = Field(False, description="Greylist unknown (client /24, sender, rcpt)")
    greylist_delay: float = Field(300.0, gt=0, description="Seconds before a retry is accepted")
    greylist_retry_window: float = Field(
        4 * 3600.0, gt=0, description="Seconds a first attempt waits for its retry"
    )
    greylist_pass_ttl: float = Field(
        36 * 86400.0, gt=0, description="Seconds a passed triplet is remembered"
    )
    rate_limit_per_ip: int = Field(
        0, ge=0, description="MAIL FROMs per client IP and window; 0 off"
    )
    rate_limit_per_ip_window: float = Field(60.0, gt=0, description="Window of the IP limit, s")
    rate_limit_per_sender: int = Field(
        0, ge=0, description="MAIL FROMs per sender and window; 0 off"
    )
    rate_limit_per_sender_window: float = Field(3600.0, gt=0, description="Sender window, s")
    kv_timeout: float = Field(2.0, gt=0, description="Seconds per shared-state check; then accept")
    plugin_dirs: list[str] = Field(
        default_factory=list,
        description="Folders put first on the import path for plugins installed there"
        " (pip install --target)",
    )
    plugins: list[PluginSettings] = Field(
        default_factory=list, description="Content scanners at end of DATA, in order"
    )
    tls_cert: str = Field(
        "", description="Certificate (PEM) the gRPC server presents; empty: plain"
    )
    tls_key: str = Field("", description="Key of tls_cert")
    tls_client_ca: str = Field(
        "", description="CA that clients' certificates must chain to (mTLS); empty: none asked"
    )
    tls_ca: str = Field("", description="CA clients check the server with; set: clients use TLS")
    client_cert: str = Field("", description="Certificate (PEM) clients present (mTLS)")
    client_key: str = Field("", description="Key of client_cert")
    tls_server_name: str = Field(
        "", description="Name clients expect in the server's certificate; empty: address's host"
    )

    @model_validator(mode="after")
    def _tls_pairs(self) -> PolicySettings:
        for cert, key in (("tls_cert", "tls_key"), ("client_cert", "client_key")):
            if bool(getattr(self, cert)) != bool(getattr(self, key)):
                raise ValueError(f"{cert} and {key} go together")
        if self.tls_client_ca and not self.tls_cert:
            raise ValueError("tls_client_ca needs tls_cert (client certificates need TLS)")
        return self

    milters: list[MilterSettings] = Field(
        default_factory=list,
        description="Milters asked at end of DATA after the plugins, in order"
        " (inet:host:port or unix:/path, or tables with per-milter settings)",
    )
    milter_default_action: str = Field(
        "tempfail",
        pattern=_MILTER_ACTION,
        description="When a milter is down, slow or broken (Postfix milter_default_action)",
    )
    milter_protocol: int = Field(6, description="Milter protocol version: 2, 3, 4 or 6")
    milter_connect_timeout: float = Field(5.0, gt=0, description="Seconds to reach a milter")
    milter_command_timeout: float = Field(
        5.0, gt=0, description="Seconds per milter step up to DATA"
    )
    milter_content_timeout: float = Field(
        8.0, gt=0, description="Seconds per header, body chunk and end of message"
    )

    reload_check_interval: float = Field(
        5.0,
        ge=0,
        description="Seconds between looks at the config file; a change reloads plugins"
        " and milters (as SIGHUP does); 0: only on SIGHUP",
    )

    _v_listen = field_validator("listen", "address", "http_listen")(_listen)

    @field_validator("milters", mode="before")
    @classmethod
    def _milter_addresses(cls, v: Any) -> Any:
        """A plain address stands for a milter with the policy-wide settings."""
        if isinstance(v, list):
            return [{"address": m} if isinstance(m, str) else m for m in v]
        return v

    @field_validator("milter_protocol")
    @classmethod
    def _protocol(cls, v: int) -> int:
        if v not in (2, 3, 4, 6):
            raise ValueError("milter protocol must be 2, 3, 4 or 6")
        return v


class QueueSettings(_Section):
    """Scheduling: retries, lifetime, bounces."""

    http_listen: str = Field("127.0.0.1:9103", description="health and metrics address")
    retry_schedule: list[float] = Field(
        default_factory=lambda: [60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0],
        description="Seconds before each retry; the last repeats until the lifetime ends",
    )
    retry_jitter: float = Field(0.1, ge=0, le=1, description="Fraction of random spread")
    lifetime: float = Field(5 * 86400.0, gt=0, description="Seconds before a message bounces")
    bounce_lifetime: float = Field(5 * 86400.0, gt=0, description="Lifetime of a bounce")
    failed_retention: float = Field(
        5 * 86400.0,
        gt=0,
        description="Seconds a message that failed (bounced, expired) stays visible as failed",
    )
    scheduler_interval: float = Field(1.0, gt=0, description="Seconds between due checks")
    delay_warning_time: float = Field(
        4 * 3600.0,
        ge=0,
        description="Seconds a message waits before its sender is warned of the delay; 0: never",
    )
    drain_timeout: float = Field(
        10.0, gt=0, description="Seconds to finish what is in hand on SIGTERM, then exit"
    )
    lease_time: float = Field(
        10.0,
        ge=1.0,
        description="Seconds within which a standby queue process takes over from a dead active one",
    )

    @field_validator("retry_schedule")
    @classmethod
    def _schedule(cls, v: list[float]) -> list[float]:
        if not v or any(s <= 0 for s in v):
            raise ValueError("must be a non-empty list of positive seconds")
        return v


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


PRIORITY_MIN, PRIORITY_MAX = -9, 9  # RFC 6710's range of MT-PRIORITY


class PrioritySettings(_Section):
    """Message priorities (RFC 6710's -9..9, 0 by default) and the delivery classes
    they fall in. Off, nothing of it runs: MT-PRIORITY is not offered (the
    parameter is refused as unknown) and every message is ``normal``. On, a
    message's priority is the MT-PRIORITY of an authenticated or trusted client,
    else the first rule that matches: ``users`` (SMTP AUTH login), ``senders``
    (address, then domain, then ``.parent`` domain), ``routes`` (recipient domain
    or ``.parent``, the highest among the recipients); else 0. Delivery takes
    ``high`` mail first, but keeps ``normal_share`` and ``low_share`` of its
    concurrency for those classes while they wait."""

    enabled: bool = Field(False, description="Order delivery by priority; offer MT-PRIORITY")
    senders: dict[str, int] = Field(
        default_factory=dict,
        description="Priority by sender address, domain or .parent domain",
    )
    users: dict[str, int] = Field(default_factory=dict, description="Priority by SMTP AUTH login")
    routes: dict[str, int] = Field(
        default_factory=dict,
        description="Priority by recipient domain or .parent domain (highest recipient wins)",
    )
    high: int = Field(
        1, ge=PRIORITY_MIN, le=PRIORITY_MAX, description="Lowest priority in the high class"
    )
    low: int = Field(
        -1, ge=PRIORITY_MIN, le=PRIORITY_MAX, description="Highest priority in the low class"
    )
    normal_share: float = Field(
        0.2, ge=0, le=0.5, description="Share of delivery.concurrency kept for waiting normal mail"
    )
    low_share: float = Field(
        0.1, ge=0, le=0.5, description="Share of delivery.concurrency kept for waiting low mail"
    )

    @field_validator("senders", "users", "routes")
    @classmethod
    def _priorities(cls, v: dict[str, int]) -> dict[str, int]:
        out = {}
        for key, priority in v.items():
            if not PRIORITY_MIN <= priority <= PRIORITY_MAX:
                raise ValueError(f"{key!r}: priority {priority} is not in -9..9")
            out[key.strip().lower()] = priority
        return out

    @model_validator(mode="after")
    def _classes(self) -> PrioritySettings:
        if self.low >= self.high:
            raise ValueError("low must be below high")
        return self

    def class_of(self, priority: int) -> str:
        """``high``, ``normal`` or ``low``."""
        if priority >= self.high:
            return "high"
        if priority <= self.low:
            return "low"
        return "normal"


class DnsSettings(_Section):
    """The one resolver every service uses."""

    nameservers: list[str] = Field(
        default_factory=list, description="Resolver IPs; empty: /etc/resolv.conf"
    )
    port: int = Field(53, ge=1, le=65535)
    timeout: float = Field(5.0, gt=0, description="Seconds for a whole lookup")
    cache_size: int = Field(10000, ge=0)
    dnssec: bool = Field(
        False,
        description="The nameservers validate DNSSEC: trust their AD bit (needed for DANE)",
    )


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


class UsersSettings(_Section):
    """Who may log in (SMTP AUTH, the console): the user store, read by the policy
    service only (``Authenticate`` over gRPC), and how failed logins are held back."""

    store: str = Field(
        "sqlite",
        pattern="^(sqlite|sql|ldap)$",
        description="sqlite: <state_dir>/users.db or url; sql: PostgreSQL or MariaDB/MySQL"
        " at url; ldap: a directory (read-only)",
    )
    url: Secret = Field(
        Secret(""),
        description="SQLAlchemy URL: postgresql+psycopg://user:pw@host/db,"
        " mysql+pymysql://user:pw@host/db, sqlite:////path/users.db; empty: the default SQLite",
    )
    password_scheme: str = Field(
        "argon2",
        pattern="^(argon2|bcrypt|sha512_crypt)$",
        description="Hash of new passwords; argon2 is Argon2id",
    )
    ldap_url: str = Field("", description="ldap://host:389 or ldaps://host:636")
    ldap_start_tls: bool = Field(False, description="StartTLS on an ldap:// connection")
    ldap_ca_file: str = Field("", description="CA the directory is verified with; empty: system")
    ldap_bind_dn: str = Field(
        "", description="DN to search with (search-and-bind); empty: anonymous search"
    )
    ldap_bind_password: Secret = Field(Secret(""), description="Password of ldap_bind_dn")
    ldap_base_dn: str = Field("", description="Where users are searched")
    ldap_user_filter: str = Field(
        "(&(objectClass=inetOrgPerson)(|(uid={login})(mail={login})))",
        description="Search filter; {login} is the escaped login",
    )
    ldap_user_dn: str = Field(
        "",
        description="Bind mode: the DN of a login, e.g. uid={login},ou=people,dc=example,dc=org;"
        " empty: search then bind",
    )
    ldap_address_attributes: list[str] = Field(
        default_factory=lambda: ["mail", "mailAlternateAddress"],
        description="Attributes holding the addresses a user may send as",
    )
    ldap_role_attribute: str = Field(
        "", description="Attribute holding roles; empty: every user has ldap_default_roles"
    )
    ldap_default_roles: list[str] = Field(
        default_factory=lambda: ["user"], description="Roles of a user without role attribute"
    )
    ldap_timeout: float = Field(5.0, gt=0, description="Seconds per directory operation")
    lockout_failures: int = Field(
        5, ge=1, description="Failed logins per client address or login before lockout"
    )
    lockout_window: float = Field(
        900.0, gt=0, description="Seconds failures are counted, and a lockout lasts"
    )


class ApiSettings(_Section):
    listen: str = Field("127.0.0.1:8025", description="REST API and web UI address")
    tls_cert: str = Field("", description="PEM certificate; empty: plain HTTP")
    tls_key: str = Field("", description="PEM key matching tls_cert")
    audit_retention: float = Field(
        365 * 86400.0, gt=0, description="Seconds the audit log keeps each record"
    )
    jaeger_url: str = Field(
        "", description="Jaeger UI base URL; a message's detail links to <url>/trace/<trace id>"
    )
    session_lifetime: float = Field(
        8 * 3600.0, gt=0, description="Seconds a console login lasts (then log in again)"
    )
    login_attempts: int = Field(
        10, ge=1, description="Failed console logins per client address in 5 minutes; more: 429"
    )

    _v_listen = field_validator("listen")(_listen)

    @model_validator(mode="after")
    def _tls_pair(self) -> ApiSettings:
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ValueError("tls_cert and tls_key go together")
        return self


class TelemetrySettings(_Section):
    otlp_endpoint: str = Field("", description="OTLP gRPC endpoint; empty: no export")
    log_level: str = Field("INFO")
    log_format: str = Field("json", pattern="^(json|text)$")
    sample_ratio: float = Field(1.0, ge=0, le=1)


class Config(_Section):
    server: ServerSettings = ServerSettings()
    nats: NatsSettings = NatsSettings()
    ingress: IngressSettings = IngressSettings()
    policy: PolicySettings = PolicySettings()
    queue: QueueSettings = QueueSettings()
    delivery: DeliverySettings = DeliverySettings()
    dns: DnsSettings = DnsSettings()
    transport: TransportSettings = TransportSettings()
    tlsrpt: TlsRptSettings = TlsRptSettings()
    shaping: ShapingSettings = ShapingSettings()
    priorities: PrioritySettings = PrioritySettings()
    users: UsersSettings = UsersSettings()
    api: ApiSettings = ApiSettings()
    telemetry: TelemetrySettings = TelemetrySettings()

    @property
    def maildir_root(self) -> Path:
        return Path(self.delivery.maildir_root or Path(self.server.state_dir) / "mail")


class Route(BaseModel):
    """Where mail for a domain goes; see :class:`TransportSettings`."""

    model_config = ConfigDict(frozen=True)

    kind: str  # "mx" | "smtp" | "lmtp" | "local"
    host: str = ""
    port: int = 0
    mx_lookup: bool = True

    def key(self) -> str:
        """A stable destination key: the unit of connection reuse and job grouping."""
        if self.kind == "local":
            return "local"
        if self.kind == "mx":
            return f"mx:{self.host}"
        return f"{self.kind}:{self.host}:{self.port}:{int(self.mx_lookup)}"


def parse_route(text: str) -> Route:
    text = text.strip()
    if text in ("mx", ""):
        return Route(kind="mx")
    if text == "local":
        return Route(kind="local")
    kind, _, rest = text.partition(":")
    if kind not in ("smtp", "lmtp") or not rest:
        raise ValueError(f"unknown route {text!r}; use smtp:[host]:port, lmtp:host:port, local, mx")
    mx_lookup = not rest.startswith("[") and kind == "smtp"
    m = re.match(r"^\[?(?P<host>[^\]]*?)\]?(?::(?P<port>\d+))?$", rest)
    if rest.startswith("["):
        m = re.match(r"^\[(?P<host>[^\]]+)\](?::(?P<port>\d+))?$", rest)
    if not m or not m.group("host"):
        raise ValueError(f"bad host in route {text!r}")
    port = int(m.group("port") or (24 if kind == "lmtp" else 25))
    if not 1 <= port <= 65535:
        raise ValueError(f"port out of range in route {text!r}")
    return Route(kind=kind, host=m.group("host").lower(), port=port, mx_lookup=mx_lookup)


# Loading (file, environment, secrets) lives in .settings; imported last because it
# builds on the models above.
from .settings import load_config, redacted  # noqa: E402
