"""The operator's own small PKI: a CA per cluster and the certificates it signs.

Used when ``spec.tls.mode`` is ``operator`` (the SMTP certificate) and for the
certificates between the services (``spec.tls.internal``). Leaf certificates
live ``validityDays`` and are re-issued ``renewBeforeDays`` before they expire,
when their names change, or when the CA that signed them changed; the CA lives
ten years and is renewed a year before its end (which re-issues every leaf).
Whether to issue is a pure decision (:func:`renewal_reason`) taking the clock
as an argument; issuing itself only needs fresh keys.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "CA_DAYS",
    "CA_RENEW_DAYS",
    "CertInfo",
    "describe",
    "issue_ca",
    "issue_leaf",
    "renewal_reason",
]

CA_DAYS = 3650
CA_RENEW_DAYS = 365


@dataclass(frozen=True)
class CertInfo:
    not_after: dt.datetime
    dns_names: tuple[str, ...]
    issuer: str
    serial: int


def _key_pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def issue_ca(common_name: str, now: dt.datetime) -> tuple[bytes, bytes]:
    """A self-signed CA: ``(certificate PEM, key PEM)``."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def issue_leaf(
    ca_cert_pem: bytes,
    ca_key_pem: bytes,
    dns_names: list[str],
    now: dt.datetime,
    days: int,
    *,
    rsa_key: bool = False,
) -> tuple[bytes, bytes]:
    """A certificate for ``dns_names`` (server and client use) signed by the CA."""
    ca_cert = x509.load_pem_x509_certificate(ca_cert_pem)
    ca_key = serialization.load_pem_private_key(ca_key_pem, password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ValueError("the CA key must be an EC key")
    # RSA for the public SMTP certificate (every peer speaks it), P-256 inside.
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        if rsa_key
        else ec.generate_private_key(ec.SECP256R1())
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns_names[0])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in dns_names]), False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def describe(cert_pem: bytes) -> CertInfo:
    cert = x509.load_pem_x509_certificate(cert_pem)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = tuple(san.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        names = ()
    return CertInfo(
        not_after=cert.not_valid_after_utc,
        dns_names=names,
        issuer=cert.issuer.rfc4514_string(),
        serial=cert.serial_number,
    )


def renewal_reason(
    cert_pem: bytes | None,
    *,
    dns_names: list[str],
    ca_cert_pem: bytes | None,
    now: dt.datetime,
    renew_before: dt.timedelta,
) -> str | None:
    """Why a certificate must be (re-)issued now, or ``None`` when it is good."""
    if not cert_pem:
        return "missing"
    try:
        info = describe(cert_pem)
    except ValueError:
        return "unreadable"
    if info.not_after - renew_before <= now:
        return f"expires {info.not_after:%Y-%m-%d}"
    if sorted(info.dns_names) != sorted(dns_names):
        return "names changed"
    if ca_cert_pem is not None:
        issuer = x509.load_pem_x509_certificate(ca_cert_pem).subject.rfc4514_string()
        if info.issuer != issuer or not _signed_by(cert_pem, ca_cert_pem):
            return "CA changed"
    return None


def _signed_by(cert_pem: bytes, ca_cert_pem: bytes) -> bool:
    cert = x509.load_pem_x509_certificate(cert_pem)
    ca = x509.load_pem_x509_certificate(ca_cert_pem)
    try:
        cert.verify_directly_issued_by(ca)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True
