"""How a service proves itself to NATS and checks NATS: TLS and credentials.

Options for ``nats.connect`` from the ``[nats]`` keys: a TLS context when a CA,
a client certificate or a ``tls://`` URL is configured (the server's certificate
is verified against ``tls_ca``, else the system's CAs), and one kind of
credentials - a ``.creds`` file (JWT and NKey seed, NATS decentralised auth), a
token, or a user and password.

Files change under a running service when Kubernetes renews a Secret: the
``.creds`` file is read again at every (re)connection by nats-py itself, and
:class:`NatsTls` re-reads the certificate and CA files into the same context,
which the next reconnection uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .tlsfiles import ContextFollower, client_context

__all__ = ["NatsAuth", "NatsTls"]


@dataclass(frozen=True)
class NatsAuth:
    """TLS files and credentials for one NATS connection; empty strings mean unset."""

    tls_ca: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    user: str = ""
    password: str = ""
    token: str = ""
    creds_file: str = ""

    def wants_tls(self, servers: list[str]) -> bool:
        return bool(self.tls_ca or self.tls_cert) or any(s.startswith("tls://") for s in servers)

    def credentials(self) -> dict[str, Any]:
        """The credential options of ``nats.connect`` (at most one kind)."""
        if self.creds_file:
            return {"user_credentials": self.creds_file}
        if self.token:
            return {"token": self.token}
        if self.user:
            return {"user": self.user, "password": self.password}
        return {}


class NatsTls(ContextFollower):
    """A client TLS context for NATS that follows its files."""

    def __init__(self, auth: NatsAuth) -> None:
        super().__init__(
            client_context(auth.tls_ca, auth.tls_cert, auth.tls_key),
            auth.tls_cert,
            auth.tls_key,
            auth.tls_ca,
        )
