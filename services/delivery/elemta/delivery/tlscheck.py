"""Checking the certificate chain a peer presented, once the handshake is done.

Every handshake runs without certificate checks in the TLS library; the
chain the server sent (:func:`peer_chain`) is then judged here against the
session's :class:`~.tlspolicy.TlsRequirement`:

* with TLSA records, by DANE (:mod:`.dane`);
* at ``verify`` (and MTA-STS), by PKIX: the chain must lead to a trusted CA
  (``ca_file``, else the system's bundle) and the leaf must be valid now and
  for one of the reference names (``cryptography``'s RFC 5280 path validation);
* otherwise there is nothing to check.

Checking after the handshake lets one connection serve both enforcing and
report-only policies (MTA-STS ``testing`` must deliver even when the check
fails), and gives each failure its TLS-RPT result type (RFC 8460 4.3.2.1).
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import ssl
import warnings
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    PolicyBuilder,
    Store,
    VerificationError,
)

from . import dane
from .certnames import name_matches
from .tlspolicy import TlsRequirement

__all__ = ["TlsVerdict", "Verifier", "peer_chain"]

log = logging.getLogger(__name__)

_PEM = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)
_DANE_TYPES = {
    dane.X509_V_ERR_CERT_HAS_EXPIRED: "certificate-expired",
    dane.X509_V_ERR_HOSTNAME_MISMATCH: "certificate-host-mismatch",
}


class TlsVerdict:
    """``result_type`` is empty on success, else the TLS-RPT result type."""

    __slots__ = ("reason", "result_type")

    def __init__(self, result_type: str = "", reason: str = "") -> None:
        self.result_type = result_type
        self.reason = reason

    @property
    def ok(self) -> bool:
        return not self.result_type

    def __repr__(self) -> str:
        return f"TlsVerdict({self.result_type!r}, {self.reason!r})"


OK = TlsVerdict()

# cryptography's web PKI profile, relaxed where mail servers' certificates often
# differ from web servers' without weakening the path: the criticality of
# subjectAltName and extendedKeyUsage, and a missing authorityKeyIdentifier.
_EE_POLICY = (
    ExtensionPolicy.webpki_defaults_ee()
    .require_present(x509.SubjectAlternativeName, Criticality.AGNOSTIC, None)
    .may_be_present(x509.ExtendedKeyUsage, Criticality.AGNOSTIC, None)
    .may_be_present(x509.AuthorityKeyIdentifier, Criticality.AGNOSTIC, None)
)
_CA_POLICY = ExtensionPolicy.webpki_defaults_ca().may_be_present(
    x509.AuthorityKeyIdentifier, Criticality.AGNOSTIC, None
)


def peer_chain(ssl_object: Any) -> list[bytes]:
    """The certificates the peer sent, DER, leaf first (unverified, as sent)."""
    if ssl_object is None:
        return []
    getter = getattr(ssl_object, "get_unverified_chain", None)  # Python 3.13+
    inner = getattr(ssl_object, "_sslobj", None)
    if getter is None and inner is not None:
        getter = getattr(inner, "get_unverified_chain", None)  # the same, private, 3.10+
    if getter is not None:
        chain = getter() or []
        return [c if isinstance(c, bytes) else c.public_bytes(ssl._ssl.ENCODING_DER) for c in chain]  # type: ignore[attr-defined]
    leaf = ssl_object.getpeercert(binary_form=True)
    return [leaf] if leaf else []


def _load_bundle(path: str) -> list[x509.Certificate]:
    out = []
    for block in _PEM.findall(Path(path).read_bytes()):
        try:
            with warnings.catch_warnings():  # old roots with a serial number of 0 or less
                warnings.simplefilter("ignore", CryptographyDeprecationWarning)
                out.append(x509.load_pem_x509_certificate(block))
        except ValueError:
            continue  # a certificate this library cannot use is no trust anchor for us
    return out


def _system_bundle() -> list[x509.Certificate]:
    paths = ssl.get_default_verify_paths()
    certs: list[x509.Certificate] = []
    if paths.cafile and Path(paths.cafile).is_file():
        certs.extend(_load_bundle(paths.cafile))
    elif paths.capath and Path(paths.capath).is_dir():
        for f in sorted(Path(paths.capath).glob("*.pem")):
            certs.extend(_load_bundle(str(f)))
    return certs


class Verifier:
    """Judges chains; keeps one trust store per CA file (loaded on first use)."""

    def __init__(self, default_ca_file: str = "") -> None:
        self.default_ca_file = default_ca_file
        self._stores: dict[str, Store | None] = {}

    def store(self, ca_file: str) -> Store | None:
        key = ca_file or self.default_ca_file
        if key not in self._stores:
            try:
                certs = _load_bundle(key) if key else _system_bundle()
            except OSError as exc:
                log.error("cannot read CA file %s: %s; nothing verifies", key, exc)
                certs = []
            self._stores[key] = Store(certs) if certs else None
        return self._stores[key]

    def check(
        self, req: TlsRequirement, chain: list[bytes], now: dt.datetime | None = None
    ) -> TlsVerdict:
        if not req.authenticated:
            return OK
        if not chain:
            return TlsVerdict("validation-failure", "the server presented no certificate")
        now = now or dt.datetime.now(dt.UTC)
        if req.tlsa:
            verdict = dane.verify(chain, req.tlsa, req.names, now=now)
            if verdict.ok:
                return OK
            kind = _DANE_TYPES.get(verdict.error, "validation-failure")
            return TlsVerdict(kind, f"DANE: {verdict.reason}")
        return self._pkix(chain, req, now)

    def _pkix(self, chain: list[bytes], req: TlsRequirement, now: dt.datetime) -> TlsVerdict:
        try:
            certs = [x509.load_der_x509_certificate(d) for d in chain]
        except ValueError as exc:
            return TlsVerdict("validation-failure", f"unreadable certificate: {exc}")
        leaf = certs[0]
        matched = next((n for n in req.names if name_matches(leaf, [n])), None)
        if matched is None:
            return TlsVerdict(
                "certificate-host-mismatch",
                f"certificate is not valid for {' or '.join(req.names)}",
            )
        if now > leaf.not_valid_after_utc:
            return TlsVerdict(
                "certificate-expired", f"certificate expired {leaf.not_valid_after_utc}"
            )
        store = self.store(req.ca_file)
        if store is None:
            return TlsVerdict(
                "certificate-not-trusted", "no trusted CA certificates to verify with"
            )
        try:
            verifier = (
                PolicyBuilder()
                .store(store)
                .time(now)
                .extension_policies(ca_policy=_CA_POLICY, ee_policy=_EE_POLICY)
                .build_server_verifier(x509.DNSName(matched))
            )
            verifier.verify(leaf, certs[1:])
        except VerificationError as exc:
            return TlsVerdict("certificate-not-trusted", f"certificate not trusted: {exc}")
        except ValueError as exc:  # a name the verifier cannot take
            return TlsVerdict("validation-failure", str(exc))
        return OK
