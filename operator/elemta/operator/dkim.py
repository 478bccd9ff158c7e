"""DKIM keys the operator generates, and the DNS TXT value that publishes each.

A key is generated once into its own Secret (``private.pem``, PKCS#8 PEM, which
the policy service reads for RSA and ed25519 alike) and never replaced by the
operator: rotation is a new selector, never a new key under an old one, so
mail signed a moment ago still verifies.
"""

from __future__ import annotations

import base64

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

__all__ = ["generate_key", "txt_value"]


def generate_key(algorithm: str, bits: int = 2048) -> bytes:
    """A new private key (PKCS#8 PEM) for ``rsa-sha256`` or ``ed25519-sha256``."""
    key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
    if algorithm == "ed25519-sha256":
        key = ed25519.Ed25519PrivateKey.generate()
    else:
        key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def txt_value(private_pem: bytes) -> str:
    """The ``selector._domainkey`` TXT record (RFC 6376 3.6.1, RFC 8463 for ed25519)."""
    key = serialization.load_pem_private_key(private_pem, password=None)
    if isinstance(key, ed25519.Ed25519PrivateKey):
        raw = key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return f"v=DKIM1; k=ed25519; p={base64.b64encode(raw).decode()}"
    if isinstance(key, rsa.RSAPrivateKey):
        der = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode()}"
    raise ValueError("a DKIM key must be RSA or ed25519")
