"""TLS material read from files, and read again when the files change.

In Kubernetes, certificates are Secrets mounted as files; cert-manager and the
operator renew them in place (the kubelet swaps the ``..data`` symlink). Every
service therefore builds its TLS state from file paths and re-reads them when
they change, without a restart:

* an ``ssl.SSLContext`` (SMTP STARTTLS, NATS) is kept and its certificate chain
  loaded again into the same context, so new handshakes present the new one;
* gRPC server credentials are dynamic: grpc asks :class:`GrpcServerTls` for its
  configuration at each new handshake and gets a new one after a change;
* gRPC channel credentials are fixed per channel, so a client asks
  :meth:`FileWatch.changed` and opens a new channel after a change.

A change is a different (device, inode, size, mtime) of any file, symlinks
followed. CA bundles added to an ``SSLContext`` stay trusted until restart
(OpenSSL cannot forget one), which keeps a CA rotation smooth.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import grpc

from .tasks import cancel_and_wait

__all__ = [
    "ContextFollower",
    "FileWatch",
    "GrpcServerTls",
    "client_context",
    "grpc_channel_credentials",
    "server_context",
]


log = logging.getLogger(__name__)


class FileWatch:
    """Tells whether any of some files changed since the last look."""

    def __init__(self, paths: Iterable[str]) -> None:
        self.paths = [p for p in paths if p]
        self._seen = self._stamp()

    def _stamp(self) -> tuple[tuple[int, int, int, int], ...]:
        out = []
        for path in self.paths:
            try:
                st = os.stat(path)
            except FileNotFoundError:
                out.append((0, 0, 0, 0))
                continue
            out.append((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns))
        return tuple(out)

    def changed(self) -> bool:
        """True once after each change (the files are taken as seen)."""
        now = self._stamp()
        if now == self._seen:
            return False
        self._seen = now
        return True


def server_context(cert: str, key: str, client_ca: str = "") -> ssl.SSLContext:
    """A server context; with ``client_ca`` clients must present a certificate it signed."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    if client_ca:
        ctx.load_verify_locations(client_ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def client_context(ca: str = "", cert: str = "", key: str = "") -> ssl.SSLContext:
    """A verifying client context: ``ca`` (else the system's), and a client certificate."""
    ctx = ssl.create_default_context(cafile=ca or None)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert:
        ctx.load_cert_chain(cert, key or None)
    return ctx


def reload_chain(ctx: ssl.SSLContext, cert: str, key: str, ca: str = "") -> None:
    """Load a renewed certificate (and CA) into an existing context."""
    ctx.load_cert_chain(cert, key or None)
    if ca:
        ctx.load_verify_locations(ca)


def _read(path: str) -> bytes:
    return Path(path).read_bytes()


def grpc_channel_credentials(ca: str, cert: str = "", key: str = "") -> grpc.ChannelCredentials:
    """Channel credentials verifying the server by ``ca``, presenting ``cert`` if given."""
    return grpc.ssl_channel_credentials(
        root_certificates=_read(ca) if ca else None,
        private_key=_read(key) if cert else None,
        certificate_chain=_read(cert) if cert else None,
    )


class GrpcServerTls:
    """gRPC server credentials that follow the files (mTLS when ``client_ca`` is set)."""

    def __init__(self, cert: str, key: str, client_ca: str = "") -> None:
        self.cert, self.key, self.client_ca = cert, key, client_ca
        self._watch = FileWatch([cert, key, client_ca])

    def _configuration(self) -> grpc.ServerCertificateConfiguration:
        return grpc.ssl_server_certificate_configuration(
            [(_read(self.key), _read(self.cert))],
            root_certificates=_read(self.client_ca) if self.client_ca else None,
        )

    def _fetch(self) -> grpc.ServerCertificateConfiguration | None:
        # Called by grpc for each new handshake: None keeps the current one.
        if not self._watch.changed():
            return None
        try:
            return self._configuration()
        except (OSError, ValueError):
            return None  # half-written files: keep serving the old pair

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.dynamic_ssl_server_credentials(
            self._configuration(),
            self._fetch,
            require_client_authentication=bool(self.client_ca),
        )


class GrpcClientTls:
    """What a gRPC client needs to reach a TLS server, and whether its files changed.

    gRPC channel credentials are fixed for a channel's life, so the client asks
    :meth:`changed` (a few ``stat`` calls, at most every ``check_every`` seconds)
    and opens a new channel when it says so.
    """

    def __init__(
        self,
        ca: str,
        cert: str = "",
        key: str = "",
        server_name: str = "",
        check_every: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ca, self.cert, self.key, self.server_name = ca, cert, key, server_name
        self._watch = FileWatch([ca, cert, key])
        self._check_every = check_every
        self._clock = clock
        self._next_check = clock() + check_every

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc_channel_credentials(self.ca, self.cert, self.key)

    def options(self) -> list[tuple[str, str]]:
        return [("grpc.ssl_target_name_override", self.server_name)] if self.server_name else []

    def changed(self) -> bool:
        now = self._clock()
        if now < self._next_check:
            return False
        self._next_check = now + self._check_every
        return self._watch.changed()


class ContextFollower:
    """Keeps an ``SSLContext`` in step with its files: reloads them when they change.

    Handshakes after a reload present the new certificate (and trust the new CA);
    connections already open keep theirs.
    """

    def __init__(self, context: ssl.SSLContext, cert: str, key: str = "", ca: str = "") -> None:
        self.context, self.cert, self.key, self.ca = context, cert, key, ca
        self._watch = FileWatch([cert, key, ca])
        self._task: asyncio.Task[None] | None = None

    def reload_if_changed(self) -> bool:
        if not self._watch.changed():
            return False
        try:
            if self.cert:
                reload_chain(self.context, self.cert, self.key, self.ca)
            elif self.ca:
                self.context.load_verify_locations(self.ca)
        except (OSError, ssl.SSLError) as exc:
            log.warning("TLS files changed but cannot be loaded yet: %s", exc)
            return False
        log.info("TLS files re-read: %s", ", ".join(p for p in (self.cert, self.ca) if p))
        return True

    async def _follow(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            self.reload_if_changed()

    def start(self, interval: float = 10.0) -> None:
        self._task = asyncio.create_task(self._follow(interval), name="tls-files")

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None
