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

import asyncio
import contextlib
import logging
import ssl
from dataclasses import dataclass
from typing import Any

from .tlsfiles import FileWatch, client_context, reload_chain

__all__ = ["NatsAuth", "NatsTls"]

log = logging.getLogger(__name__)


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


class NatsTls:
    """A client TLS context for NATS that follows its files."""

    def __init__(self, auth: NatsAuth) -> None:
        self.auth = auth
        self.context: ssl.SSLContext = client_context(auth.tls_ca, auth.tls_cert, auth.tls_key)
        self._watch = FileWatch([auth.tls_ca, auth.tls_cert, auth.tls_key])
        self._task: asyncio.Task[None] | None = None

    def reload_if_changed(self) -> bool:
        if not self._watch.changed():
            return False
        try:
            if self.auth.tls_cert:
                reload_chain(self.context, self.auth.tls_cert, self.auth.tls_key, self.auth.tls_ca)
            elif self.auth.tls_ca:
                self.context.load_verify_locations(self.auth.tls_ca)
        except (OSError, ssl.SSLError) as exc:
            log.warning("NATS TLS files changed but cannot be loaded yet: %s", exc)
            return False
        log.info("NATS TLS files re-read")
        return True

    async def _follow(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            self.reload_if_changed()

    def start(self, interval: float = 10.0) -> None:
        self._task = asyncio.create_task(self._follow(interval), name="nats-tls-files")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
