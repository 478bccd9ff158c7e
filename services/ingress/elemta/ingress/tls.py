"""The STARTTLS server context: the configured certificate or a self-signed one.

With no ``ingress.tls_cert`` configured, the first start writes a self-signed
certificate for ``server.hostname`` (key and certificate in one PEM file, mode
0600) to ``<state_dir>/tls/``; later starts, and every other ingress process that
shares the state directory, reuse it until it nears its end of validity.
"""

from __future__ import annotations

import datetime
import fcntl
import logging
import os
import ssl
import tempfile
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from elemta.common.config import Config

from .tlscontext import level_context

__all__ = ["certificate_files", "self_signed_pem", "server_context"]

log = logging.getLogger(__name__)

VALIDITY_DAYS = 825
RENEW_BEFORE = datetime.timedelta(days=30)


def _generate(hostname: str) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname[:64] or "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=VALIDITY_DAYS))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return key_pem + cert.public_bytes(serialization.Encoding.PEM)


def _still_good(path: Path, hostname: str) -> bool:
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError):
        return False
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not cn or cn[0].value != hostname[:64]:
        return False
    left = cert.not_valid_after_utc - datetime.datetime.now(datetime.UTC)
    return left > RENEW_BEFORE


def self_signed_pem(state_dir: str, hostname: str) -> Path:
    """Path of the self-signed key+certificate PEM, created (atomically) when needed.

    Several ingress processes may start at once: an exclusive lock makes one of
    them create the file and the others find it good, so that no process loads
    a certificate from one file and the key from its replacement.
    """
    directory = Path(state_dir) / "tls"
    path = directory / "ingress-selfsigned.pem"
    if _still_good(path, hostname):
        return path
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".selfsigned.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _still_good(path, hostname):
            _write(directory, path, hostname)
    return path


def _write(directory: Path, path: Path, hostname: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".selfsigned-")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(_generate(hostname))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    log.warning("no ingress.tls_cert configured; using a self-signed certificate %s", path)


def certificate_files(cfg: Config, cert: str = "", key: str = "") -> tuple[str, str]:
    """The certificate and key a listener serves: its own, else ``ingress.tls_cert``,
    else the self-signed one; raises ValueError for a key without certificate."""
    if not cert:
        if cfg.ingress.tls_key and not cfg.ingress.tls_cert:
            raise ValueError("ingress.tls_key is set but ingress.tls_cert is not")
        cert, key = cfg.ingress.tls_cert, cfg.ingress.tls_key
    if not cert:
        return str(self_signed_pem(cfg.server.state_dir, cfg.server.hostname)), ""
    return cert, key


def server_context(cfg: Config) -> ssl.SSLContext:
    """The SSL context of ``ingress.listen``; raises ValueError or OSError when unusable."""
    cert, key = certificate_files(cfg)
    ctx = level_context(cfg.ingress.tls_level)
    ctx.load_cert_chain(cert, key or None)
    return ctx
