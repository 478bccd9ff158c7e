"""The REST API and console (``[api]``)."""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from .base import _listen, _Section


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
