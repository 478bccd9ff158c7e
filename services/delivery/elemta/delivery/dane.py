"""DANE: matching TLSA records against the certificate chain a server presented.

RFC 6698 defines TLSA records (``usage selector mtype data``), RFC 7671 how to
use them, RFC 7672 how SMTP uses them. :func:`verify` takes the chain exactly as
the peer sent it (leaf first) and the TLSA records of the host, and answers
with a :class:`DaneVerdict`: verified or not, an error code and the depth of
the certificate (or bare key) that matched. The codes are OpenSSL's
``X509_V_ERR_*`` numbers, so that a verdict reads the same as ``openssl
s_client -dane_tlsa_rrdata`` and as the OpenSSL DANE test vectors.

How the records are used (RFC 7671 section 5):

* **DANE-EE(3)** matches the leaf certificate alone: no chain, no expiry
  check; no name check either, as RFC 7672 3.1.1 says for SMTP
  (``ee_namechecks=False``, the default).
* **DANE-TA(2)** matches a certificate of the chain above the leaf, a
  certificate published in full in DNS (``2 0 0``), or a bare public key
  (``2 1 0``) that signed the top of the chain. The chain below the trust
  anchor is then checked like any chain: signatures, validity dates, and the
  leaf's names against the reference identifiers.
* **PKIX-TA(0)** and **PKIX-EE(1)** also need an ordinary path to a trusted
  root (``pkix_anchors``). RFC 7672 3.1.3 makes them unusable for SMTP: the
  delivery path drops them (:func:`usable_for_smtp`) before calling
  :func:`verify`; they are implemented for completeness and the test vectors.
* DANE usages are tried before PKIX ones, EE before TA; a DANE match decides.
* **Digest agility** (RFC 7671 section 9): per usage and selector, only the
  strongest digest present is compared (``digest_order``; SHA2-512 over
  SHA2-256 by default, as Postfix's ``tls_dane_digests``); ``Full(0)``
  records with them are ignored.

A record with an unknown usage, selector or matching type, a digest of the
wrong length or ``Full(0)`` data that is not a certificate or key is
*unusable* and ignored (RFC 7672 2.2); :func:`usable_for_smtp` tells the
caller when none are left.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, padding, rsa
from cryptography.x509.oid import ExtensionOID, SignatureAlgorithmOID

from .certnames import name_matches

__all__ = [
    "DaneVerdict",
    "Tlsa",
    "X509_V_ERR_CERT_HAS_EXPIRED",
    "X509_V_ERR_DANE_NO_MATCH",
    "X509_V_ERR_HOSTNAME_MISMATCH",
    "X509_V_OK",
    "spki_der",
    "usable_for_smtp",
    "verify",
]

# OpenSSL's verification codes (x509_vfy.h), the ones this module produces.
X509_V_OK = 0
X509_V_ERR_UNABLE_TO_DECODE_ISSUER_PUBLIC_KEY = 6
X509_V_ERR_CERT_SIGNATURE_FAILURE = 7
X509_V_ERR_CERT_NOT_YET_VALID = 9
X509_V_ERR_CERT_HAS_EXPIRED = 10
X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT = 18
X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN = 19
X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY = 20
X509_V_ERR_HOSTNAME_MISMATCH = 62
X509_V_ERR_DANE_NO_MATCH = 65

_REASONS = {
    X509_V_OK: "ok",
    X509_V_ERR_UNABLE_TO_DECODE_ISSUER_PUBLIC_KEY: "unable to decode issuer public key",
    X509_V_ERR_CERT_SIGNATURE_FAILURE: "certificate signature failure",
    X509_V_ERR_CERT_NOT_YET_VALID: "certificate is not yet valid",
    X509_V_ERR_CERT_HAS_EXPIRED: "certificate has expired",
    X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT: "self-signed certificate",
    X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN: "self-signed certificate in certificate chain",
    X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY: "unable to get local issuer certificate",
    X509_V_ERR_HOSTNAME_MISMATCH: "hostname mismatch",
    X509_V_ERR_DANE_NO_MATCH: "no matching DANE TLSA records",
}

PKIX_TA, PKIX_EE, DANE_TA, DANE_EE = 0, 1, 2, 3
CERT, SPKI = 0, 1
FULL, SHA256, SHA512 = 0, 1, 2

_DIGESTS: dict[int, Callable[[bytes], bytes]] = {
    SHA256: lambda b: hashlib.sha256(b).digest(),
    SHA512: lambda b: hashlib.sha512(b).digest(),
}
_DIGEST_SIZES = {SHA256: 32, SHA512: 64}
# Strength of each matching type for digest agility: higher is preferred.
DEFAULT_DIGEST_ORDER: dict[int, int] = {FULL: 0, SHA256: 1, SHA512: 2}


@dataclass(frozen=True)
class Tlsa:
    """One TLSA record; :attr:`usable` is False for anything RFC 6698 does not define."""

    usage: int
    selector: int
    mtype: int
    data: bytes

    @classmethod
    def parse(cls, text: str) -> Tlsa:
        """``"3 1 1 <hex>"`` (presentation format; whitespace in the hex is allowed)."""
        usage, selector, mtype, *rest = text.split()
        return cls(int(usage), int(selector), int(mtype), bytes.fromhex("".join(rest)))

    def __str__(self) -> str:
        return f"{self.usage} {self.selector} {self.mtype} {self.data.hex().upper()}"

    @property
    def usable(self) -> bool:
        if self.usage not in (PKIX_TA, PKIX_EE, DANE_TA, DANE_EE) or self.selector not in (
            CERT,
            SPKI,
        ):
            return False
        if self.mtype in _DIGEST_SIZES:
            return len(self.data) == _DIGEST_SIZES[self.mtype]
        if self.mtype != FULL:
            return False
        try:
            if self.selector == CERT:
                x509.load_der_x509_certificate(self.data)
            else:
                serialization.load_der_public_key(self.data)
        except (ValueError, TypeError):
            return False
        return True


def usable_for_smtp(records: Iterable[Tlsa]) -> list[Tlsa]:
    """The records an SMTP client may use: DANE-TA and DANE-EE, well formed (RFC 7672 3.1.3)."""
    return [r for r in records if r.usage in (DANE_TA, DANE_EE) and r.usable]


@dataclass(frozen=True)
class DaneVerdict:
    """``error`` is 0 when verified; ``depth`` is where the match was (-1: none)."""

    error: int
    depth: int
    record: Tlsa | None = None

    @property
    def ok(self) -> bool:
        return self.error == X509_V_OK

    @property
    def reason(self) -> str:
        return _REASONS.get(self.error, f"verification error {self.error}")


# -- DER and names -------------------------------------------------------------------


def _tlv(der: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, start of contents, end) of the DER element at ``pos``."""
    tag = der[pos]
    length = der[pos + 1]
    pos += 2
    if length & 0x80:
        n = length & 0x7F
        length = int.from_bytes(der[pos : pos + n], "big")
        pos += n
    return tag, pos, pos + length


def spki_der(cert_der: bytes) -> bytes:
    """The SubjectPublicKeyInfo exactly as encoded in the certificate (selector 1)."""
    _, body, _ = _tlv(cert_der, 0)  # Certificate
    _, pos, _ = _tlv(cert_der, body)  # TBSCertificate
    if cert_der[pos] == 0xA0:  # [0] version
        pos = _tlv(cert_der, pos)[2]
    for _ in range(5):  # serial, signature, issuer, validity, subject
        pos = _tlv(cert_der, pos)[2]
    return cert_der[pos : _tlv(cert_der, pos)[2]]


# -- signatures --------------------------------------------------------------------


def _signed_by(cert: x509.Certificate, key: object) -> bool:
    """Whether ``key`` made the signature on ``cert``."""
    sig, tbs = cert.signature, cert.tbs_certificate_bytes
    hash_alg = cert.signature_hash_algorithm
    try:
        if isinstance(key, rsa.RSAPublicKey):
            if cert.signature_algorithm_oid == SignatureAlgorithmOID.RSASSA_PSS:
                pss = cert.signature_algorithm_parameters
                assert isinstance(pss, padding.PSS)
                key.verify(sig, tbs, pss, hash_alg)  # type: ignore[arg-type]
            else:
                key.verify(sig, tbs, padding.PKCS1v15(), hash_alg)  # type: ignore[arg-type]
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(sig, tbs, ec.ECDSA(hash_alg))  # type: ignore[arg-type]
        elif isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
            key.verify(sig, tbs)
        elif isinstance(key, dsa.DSAPublicKey):
            key.verify(sig, tbs, hash_alg)  # type: ignore[arg-type]
        else:
            return False
    except (InvalidSignature, ValueError, TypeError, AssertionError):
        return False
    return True


def _key_id(cert: x509.Certificate, oid: x509.ObjectIdentifier) -> bytes | None:
    try:
        ext = cert.extensions.get_extension_for_oid(oid).value
    except (x509.ExtensionNotFound, ValueError):
        return None
    if isinstance(ext, x509.SubjectKeyIdentifier):
        return ext.digest
    if isinstance(ext, x509.AuthorityKeyIdentifier):
        return ext.key_identifier
    return None


def _may_have_issued(issuer: x509.Certificate, cert: x509.Certificate) -> bool:
    """Names chain, and key identifiers do not contradict it (RFC 5280 4.2.1.1)."""
    if issuer.subject != cert.issuer:
        return False
    akid = _key_id(cert, ExtensionOID.AUTHORITY_KEY_IDENTIFIER)
    skid = _key_id(issuer, ExtensionOID.SUBJECT_KEY_IDENTIFIER)
    return akid is None or skid is None or akid == skid


def _self_issued(cert: x509.Certificate) -> bool:
    return _may_have_issued(cert, cert)


# -- matching ----------------------------------------------------------------------


@dataclass
class _Chain:
    """Certificates as DER and parsed, with the selector data computed once."""

    der: list[bytes] = field(default_factory=list)
    certs: list[x509.Certificate] = field(default_factory=list)

    def add(self, cert: x509.Certificate) -> None:
        self.certs.append(cert)
        self.der.append(cert.public_bytes(serialization.Encoding.DER))


def _selected(der: bytes, selector: int) -> bytes:
    return der if selector == CERT else spki_der(der)


class _Matcher:
    def __init__(self, records: Sequence[Tlsa], order: dict[int, int]) -> None:
        self.order = order
        usable = [r for r in records if r.usable and r.mtype in order]
        # Usage descending (DANE before PKIX, EE before TA within each),
        # selector descending, strongest digest first.
        self.records = sorted(usable, key=lambda r: (-r.usage, -r.selector, -order[r.mtype]))

    def has(self, *usages: int) -> bool:
        return any(r.usage in usages for r in self.records)

    def match(self, der: bytes, usages: tuple[int, ...]) -> Tlsa | None:
        """The first record of ``usages`` matching the certificate, in preference order."""
        group: tuple[int, int] | None = None
        strongest = 0
        for r in self.records:
            if r.usage not in usages:
                continue
            if (r.usage, r.selector) != group:
                group, strongest = (r.usage, r.selector), self.order[r.mtype]
            if self.order[r.mtype] < strongest:
                continue  # digest agility: a weaker digest beside a stronger one
            data = _selected(der, r.selector)
            if r.mtype != FULL:
                data = _DIGESTS[r.mtype](data)
            if data == r.data:
                return r
        return None

    def dns_certs(self) -> list[x509.Certificate]:
        """Full certificates published in TLSA records of TA usages (``2 0 0``, ``0 0 0``)."""
        return [
            x509.load_der_x509_certificate(r.data)
            for r in self.records
            if r.usage in (DANE_TA, PKIX_TA) and r.selector == CERT and r.mtype == FULL
        ]

    def bare_keys(self) -> list[tuple[Tlsa, object]]:
        return [
            (r, serialization.load_der_public_key(r.data))
            for r in self.records
            if r.usage == DANE_TA and r.selector == SPKI and r.mtype == FULL
        ]


def _time_error(cert: x509.Certificate, now: dt.datetime) -> int:
    if now < cert.not_valid_before_utc:
        return X509_V_ERR_CERT_NOT_YET_VALID
    if now > cert.not_valid_after_utc:
        return X509_V_ERR_CERT_HAS_EXPIRED
    return X509_V_OK


def verify(
    chain: Sequence[bytes],
    records: Sequence[Tlsa],
    names: Sequence[str],
    *,
    ee_namechecks: bool = False,
    pkix_anchors: Sequence[x509.Certificate] = (),
    digest_order: dict[int, int] | None = None,
    now: dt.datetime | None = None,
) -> DaneVerdict:
    """Authenticate the presented ``chain`` (DER, leaf first) with ``records``.

    ``names`` are the reference identifiers the leaf must carry for TA (and
    PKIX) matches: for SMTP the TLSA base domain and the MX host name.
    """
    if not chain:
        return DaneVerdict(X509_V_ERR_DANE_NO_MATCH, -1)
    now = now or dt.datetime.now(dt.UTC)
    m = _Matcher(records, digest_order or DEFAULT_DIGEST_ORDER)
    leaf_der = chain[0]
    leaf = x509.load_der_x509_certificate(leaf_der)

    # The leaf: DANE-EE decides on its own; a PKIX-EE match still needs a PKIX path.
    hit = m.match(leaf_der, (DANE_EE,))
    if hit is not None:
        if ee_namechecks and not name_matches(leaf, names):
            return DaneVerdict(X509_V_ERR_HOSTNAME_MISMATCH, 0, hit)
        return DaneVerdict(X509_V_OK, 0, hit)
    pkix_hit = m.match(leaf_der, (PKIX_EE,))
    depth = 0 if pkix_hit is not None else -1
    if not m.has(DANE_TA, PKIX_TA) and depth < 0:
        return DaneVerdict(X509_V_ERR_DANE_NO_MATCH, -1)

    # Build the path upward: presented certificates, then certificates from DNS,
    # then (only with PKIX records) the trust anchors.
    pool = [x509.load_der_x509_certificate(d) for d in chain[1:]] + m.dns_certs()
    anchors = list(pkix_anchors) if m.has(PKIX_TA, PKIX_EE) else []
    path = _Chain()
    path.add(leaf)
    dane_ta: tuple[int, Tlsa] | None = None
    bare_key: object | None = None
    anchored = False  # the path reached a PKIX trust anchor
    from_store = False  # ... one taken from the trust store, where DANE-TA does not apply
    while True:
        d = len(path.certs) - 1
        cert = path.certs[-1]
        if d > 0:
            hit = None if from_store else m.match(path.der[d], (DANE_TA,))
            if hit is not None:
                dane_ta = (d, hit)
                break
            if depth < 0:
                pkix_hit = m.match(path.der[d], (PKIX_TA,))
                depth = d if pkix_hit is not None else -1
        if anchored or d > 0 and _self_issued(cert):
            break
        issuer = next((c for c in pool if c not in path.certs and _may_have_issued(c, cert)), None)
        if issuer is None:
            issuer = next((c for c in anchors if _may_have_issued(c, cert)), None)
            from_store = issuer is not None
        if issuer is None or _self_issued(cert):
            break
        path.add(issuer)
        anchored = any(issuer == a for a in anchors)

    if dane_ta is None and not anchored:
        top = path.certs[-1]
        for rec, key in m.bare_keys():
            if _signed_by(top, key):
                dane_ta, bare_key = (len(path.certs) - 1, rec), key
                break

    if dane_ta is not None:
        ta_depth, record = dane_ta
        if not name_matches(leaf, names):
            return DaneVerdict(X509_V_ERR_HOSTNAME_MISMATCH, ta_depth, record)
        error = _check_path(path.certs[: ta_depth + 1], now, bare_key)
        return DaneVerdict(error, ta_depth, record)

    if depth < 0:
        return DaneVerdict(X509_V_ERR_DANE_NO_MATCH, -1)
    # A PKIX-?? record matched; the path must end at a trusted root.
    if not anchored:
        top = path.certs[-1]
        if _self_issued(top):
            error = (
                X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT
                if len(path.certs) == 1
                else X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN
            )
        else:
            error = X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY
        return DaneVerdict(error, depth, pkix_hit)
    if not name_matches(leaf, names):
        return DaneVerdict(X509_V_ERR_HOSTNAME_MISMATCH, depth, pkix_hit)
    return DaneVerdict(_check_path(path.certs, now, None), depth, pkix_hit)


def _check_path(
    certs: Sequence[x509.Certificate], now: dt.datetime, bare_key: object | None
) -> int:
    """Signatures and validity dates from the trust anchor down to the leaf.

    ``certs`` ends with the trust anchor, or, with a bare key, with the
    certificate that key signed. The anchor's own signature is not checked.
    """
    if bare_key is not None and not _signed_by(certs[-1], bare_key):
        return X509_V_ERR_CERT_SIGNATURE_FAILURE
    for i in range(len(certs) - 2, -1, -1):
        if not _signed_by(certs[i], certs[i + 1].public_key()):
            return X509_V_ERR_CERT_SIGNATURE_FAILURE
    for cert in reversed(certs):
        error = _time_error(cert, now)
        if error:
            return error
    return X509_V_OK
