"""Is a certificate valid for a host name? (RFC 6125 as RFC 7672 and RFC 8461 use it)

The presented identifiers are the certificate's DNS subjectAltNames, or, when
it has none, its subject Common Names (RFC 7672 3.2.3 allows the fallback, and
OpenSSL does it). A presented ``*.example.org`` covers exactly one whole
leftmost label; partial wildcards (``m*.example.org``) match nothing. A
reference identifier starting with a dot (``.example.org``) stands for any
name below it, as in Postfix's ``match=`` lists.
"""

from __future__ import annotations

from collections.abc import Iterable

from cryptography import x509
from cryptography.x509.oid import ExtensionOID, NameOID

__all__ = ["name_matches"]


def _dns_names(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME)
    except x509.ExtensionNotFound:
        san = None
    except ValueError:  # a malformed extension: no names to trust
        return []
    if san is not None:
        names = san.value.get_values_for_type(x509.DNSName)  # type: ignore[attr-defined]
        if names:
            return [str(n) for n in names]
    # No DNS-ID: the Common Name, as RFC 7672 3.2.3 allows and OpenSSL does.
    return [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]


def _label_match(pattern: str, name: str) -> bool:
    pattern, name = pattern.lower().rstrip("."), name.lower().rstrip(".")
    if pattern == name:
        return True
    if pattern.startswith("*.") and "*" not in pattern[2:]:
        head, _, tail = name.partition(".")
        return bool(head) and tail == pattern[2:] and tail.count(".") >= 1
    return False


def name_matches(cert: x509.Certificate, references: Iterable[str]) -> bool:
    """Whether the certificate is valid for one of the reference identifiers."""
    presented = _dns_names(cert)
    for ref in references:
        ref = ref.lower().rstrip(".")
        for pattern in presented:
            p = pattern.lower().rstrip(".")
            if ref.startswith("."):
                if p.endswith(ref) and "*" not in p or p.startswith("*.") and p[1:].endswith(ref):
                    return True
            elif _label_match(p, ref):
                return True
    return False
