"""The listeners' TLS: security levels, the certificate re-read when its files
change, and what is watched (handshakes, failures, days left on the certificate).

Levels (``ingress.tls_level`` and each listener's ``tls_level``), anchored on
Mozilla's server-side TLS configurations (``docs/decisions.md``, "TLS levels"):

``minimum``      TLS 1.0-1.3, Mozilla "old" ciphers (CBC, RSA key exchange and
                 3DES included) -- an MTA port where any TLS beats plaintext;
``recommended``  TLS 1.2-1.3, Mozilla "intermediate" (ECDHE and DHE, AEAD only);
``strict``       TLS 1.2-1.3, ECDHE with AEAD only;
``maximum``      TLS 1.3 only (Mozilla "modern").

TLS 1.3 suites are OpenSSL's three (AES-128-GCM, AES-256-GCM, ChaCha20-Poly1305)
at every level that allows TLS 1.3; groups are OpenSSL's defaults.

Reload: every handshake (STARTTLS or implicit TLS) first looks at the certificate
and key files (two ``stat`` calls). When they changed, a new context is built and
the handshake moves to it from the SNI callback (``SSLObject.context``), so the
very next connection is served the new certificate, without a restart. A file
caught half-written is not loaded: the old certificate serves until it is whole.
"""

from __future__ import annotations

import datetime
import logging
import ssl
from dataclasses import dataclass

from cryptography import x509
from prometheus_client import Counter, Gauge

from elemta.common.tlsfiles import FileWatch

__all__ = [
    "HANDSHAKES",
    "HANDSHAKE_FAILURES",
    "LEVELS",
    "ListenerTls",
    "TlsLevel",
    "level_context",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TlsLevel:
    minimum: ssl.TLSVersion
    ciphers: str  # OpenSSL cipher list for TLS 1.2 and older ("" with TLS 1.3 only)


_INTERMEDIATE_ECDHE = (
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
)
_INTERMEDIATE = (
    _INTERMEDIATE_ECDHE
    + ":DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:DHE-RSA-CHACHA20-POLY1305"
)
_OLD = (
    _INTERMEDIATE + ":ECDHE-ECDSA-AES128-SHA256:ECDHE-RSA-AES128-SHA256:ECDHE-ECDSA-AES128-SHA"
    ":ECDHE-RSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA384:ECDHE-RSA-AES256-SHA384"
    ":ECDHE-ECDSA-AES256-SHA:ECDHE-RSA-AES256-SHA:DHE-RSA-AES128-SHA256:DHE-RSA-AES256-SHA256"
    ":AES128-GCM-SHA256:AES256-GCM-SHA384:AES128-SHA256:AES256-SHA256:AES128-SHA:AES256-SHA"
    ":DES-CBC3-SHA"
    # OpenSSL 3 allows TLS 1.0/1.1 and SHA-1 signatures only at security level 0
    ":@SECLEVEL=0"
)

LEVELS: dict[str, TlsLevel] = {
    "minimum": TlsLevel(ssl.TLSVersion.TLSv1, _OLD),
    "recommended": TlsLevel(ssl.TLSVersion.TLSv1_2, _INTERMEDIATE),
    "strict": TlsLevel(ssl.TLSVersion.TLSv1_2, _INTERMEDIATE_ECDHE),
    "maximum": TlsLevel(ssl.TLSVersion.TLSv1_3, ""),
}

HANDSHAKES = Counter(
    "elemta_ingress_tls_handshakes",
    "TLS handshakes completed, by listener role, protocol version and cipher",
    ["role", "version", "cipher"],
)
HANDSHAKE_FAILURES = Counter(
    "elemta_ingress_tls_handshake_failures",
    "TLS handshakes that failed, by listener role and reason (OpenSSL's, or closed)",
    ["role", "reason"],
)
CERT_DAYS_LEFT = Gauge(
    "elemta_ingress_tls_certificate_days_left",
    "Days until the certificate served on a listener expires",
    ["listener"],
)


def level_context(level: str) -> ssl.SSLContext:
    """A server context of ``level``, without a certificate."""
    spec = LEVELS[level]
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = spec.minimum
    ctx.maximum_version = ssl.TLSVersion.MAXIMUM_SUPPORTED
    if spec.ciphers:
        ctx.set_ciphers(spec.ciphers)
    ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_NO_COMPRESSION
    ctx.options |= ssl.OP_NO_RENEGOTIATION
    ctx.verify_mode = ssl.CERT_NONE  # clients are not asked for certificates
    return ctx


def _days_left(cert_path: str) -> float | None:
    try:
        with open(cert_path, "rb") as fh:
            pem = fh.read()
        start = pem.find(b"-----BEGIN CERTIFICATE-----")
        cert = x509.load_pem_x509_certificate(pem[start:])
    except (OSError, ValueError):
        return None
    left = cert.not_valid_after_utc - datetime.datetime.now(datetime.UTC)
    return left.total_seconds() / 86400


class ListenerTls:
    """The TLS of one listener: ``context`` is handed to asyncio (implicit TLS) or
    aiosmtpd (STARTTLS); each handshake is moved to the newest certificate."""

    def __init__(self, name: str, role: str, level: str, cert: str, key: str = "") -> None:
        self.name, self.role, self.level = name, role, level
        self.cert, self.key = cert, key
        self._watch = FileWatch([cert, key])
        self._pending = False  # changed files that did not load yet: try at each handshake
        self.current = self._build()
        self.context = self._build()
        self.context.sni_callback = self._on_hello

    def _build(self) -> ssl.SSLContext:
        ctx = level_context(self.level)
        ctx.load_cert_chain(self.cert, self.key or None)
        days = _days_left(self.cert)
        if days is not None:
            CERT_DAYS_LEFT.labels(self.name).set(round(days, 2))
        return ctx

    def refresh(self) -> bool:
        """Rebuild ``current`` when the files changed; True when it was."""
        if not self._watch.changed() and not self._pending:
            return False
        try:
            self.current = self._build()
        except (OSError, ssl.SSLError, ValueError) as exc:
            if not self._pending:
                log.warning(
                    "certificate of %s changed but cannot be loaded yet: %s", self.name, exc
                )
            self._pending = True
            return False
        self._pending = False
        log.info("certificate of %s re-read from %s", self.name, self.cert)
        return True

    def _on_hello(self, sslobj: ssl.SSLObject, server_name: str | None, _: ssl.SSLContext) -> None:
        self.refresh()
        sslobj.context = self.current

    def handshake_done(self, sslobj: object) -> None:
        version = getattr(sslobj, "version", lambda: None)() or "unknown"
        cipher = (getattr(sslobj, "cipher", lambda: None)() or ("unknown",))[0]
        HANDSHAKES.labels(self.role, version, cipher).inc()

    def handshake_failed(self, error: BaseException | None) -> None:
        reason = getattr(error, "reason", None) or ("closed" if error is None else "error")
        HANDSHAKE_FAILURES.labels(self.role, str(reason).lower()[:40]).inc()
