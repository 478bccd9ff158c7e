"""The settings every service shares: the NATS connection, the resolver, telemetry."""

from __future__ import annotations

from pydantic import Field, model_validator

from .base import Secret, _Section


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


class TelemetrySettings(_Section):
    otlp_endpoint: str = Field("", description="OTLP gRPC endpoint; empty: no export")
    log_level: str = Field("INFO")
    log_format: str = Field("json", pattern="^(json|text)$")
    sample_ratio: float = Field(1.0, ge=0, le=1)
