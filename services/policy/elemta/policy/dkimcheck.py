"""DKIM (RFC 6376, RFC 8463 ed25519, RFC 8301): verify every signature, sign outgoing mail.

:class:`DkimVerifier` checks each ``DKIM-Signature`` of a message with dkimpy in
a worker thread, looking up keys through :class:`~elemta.policy.dnstxt.TxtLookup`.
Each signature gets one RFC 8601 result:

=========  ===============================================================
pass       the signature verified
fail       the body hash or the signature did not match
neutral    not evaluated (over the ``max_signatures`` limit)
temperror  the key could not be fetched now (DNS timeout, SERVFAIL)
permerror  malformed signature, no key, malformed or unsuitable key,
           ``From`` not signed, rsa-sha1 (RFC 8301), key under 1024 bits
none       the message has no signature (a single result)
=========  ===============================================================

Nothing raises: any exception while evaluating one signature becomes a
``permerror`` for that signature.

:class:`DkimSigner` signs with every key of a domain (say RSA-2048 plus
ed25519), relaxed/relaxed, over a fixed list of header fields that are present,
with ``From`` signed once more than it occurs (oversigning) so that no second
``From`` can be added. Keys are read from files, so a Kubernetes Secret can be
mounted as the key directory.
"""

from __future__ import annotations

import asyncio
import base64
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from dkim.util import parse_tag_value

from elemta.common.config import DnsSettings
from elemta.common.resolver import Resolver

from .dnstxt import TxtLookup, TxtTemporaryError

__all__ = [
    "ALGORITHMS",
    "SIGN_HEADERS",
    "DkimResult",
    "DkimSigner",
    "DkimVerifier",
    "SigningKey",
    "load_private_key",
]

ALGORITHMS = ("rsa-sha256", "ed25519-sha256")

#: Header fields signed when present, in this order; ``from`` is also oversigned.
SIGN_HEADERS = (
    "from",
    "to",
    "subject",
    "date",
    "message-id",
    "mime-version",
    "content-type",
    "cc",
    "reply-to",
    "in-reply-to",
    "references",
)

_KEY_TYPE = {b"rsa-sha256": b"rsa", b"rsa-sha1": b"rsa", b"ed25519-sha256": b"ed25519"}
_SIG_NAME = re.compile(rb"(?im)^dkim-signature[ \t]*:")

DnsFunc = Callable[..., bytes | None]


@dataclass(frozen=True)
class DkimResult:
    """The outcome for one signature (or ``none`` for an unsigned message)."""

    result: str  # pass | fail | neutral | temperror | permerror | none
    domain: str = ""  # d=
    selector: str = ""  # s=
    algorithm: str = ""  # a=
    reason: str = ""
    identity: str = ""  # i= (AUID), "" when absent
    key_bits: int | None = None
    b: str = ""  # first characters of b=, for header.b (RFC 6008)

    def authres(self) -> str:
        """This result as an ``Authentication-Results`` resinfo (RFC 8601, RFC 6008)."""
        if self.result == "none":
            return "dkim=none"
        parts = [f"dkim={self.result}"]
        if self.reason and self.result != "pass":
            parts.append(f"({_comment(self.reason)})")
        elif self.key_bits:
            parts.append(f"({self.key_bits}-bit key)")
        if self.domain:
            parts.append(f"header.d={self.domain}")
        if self.identity:
            parts.append(f"header.i={self.identity}")
        if self.selector:
            parts.append(f"header.s={self.selector}")
        if self.algorithm:
            parts.append(f"header.a={self.algorithm}")
        if self.b:
            parts.append(f"header.b={self.b}")
        return " ".join(parts)


def _comment(text: str) -> str:
    return re.sub(r"[()\\\r\n]", " ", text)[:120].strip()


def _text(value: bytes | None) -> str:
    if not value:
        return ""
    return re.sub(r"\s+", "", value.decode("utf-8", "replace"))


def _lenient_tags(value: bytes) -> dict[bytes, bytes]:
    """Tags of a signature that may not parse: for reporting d=, s=, a=."""
    try:
        return dict(parse_tag_value(value))
    except Exception:  # InvalidTagValueList and worse
        out: dict[bytes, bytes] = {}
        for part in value.split(b";"):
            key, sep, val = part.partition(b"=")
            if sep and key.strip() and key.strip() not in out:
                out[key.strip()] = val.strip()
        return out


class DkimVerifier:
    """Verify every DKIM signature of a message; never raises."""

    def __init__(
        self,
        dns: DnsSettings | Resolver,
        *,
        max_signatures: int = 10,
        minkey: int = 1024,
        dnsfunc: DnsFunc | None = None,
    ) -> None:
        resolver = Resolver.of(dns)
        self.dns = resolver.settings
        self.max_signatures = max_signatures
        self.minkey = minkey
        self._lookup: DnsFunc = dnsfunc or TxtLookup(resolver)

    async def verify(self, message: bytes) -> list[DkimResult]:
        return await asyncio.to_thread(self.verify_sync, message)

    def verify_sync(self, message: bytes) -> list[DkimResult]:
        try:
            d = dkim.DKIM(message, minkey=self.minkey, timeout=self.dns.timeout)
        except Exception as exc:  # unparseable header block
            if _SIG_NAME.search(message):
                return [DkimResult("permerror", reason=f"message format: {exc}")]
            return [DkimResult("none", reason="no signature")]
        sigs = [v for k, v in d.headers if k.lower() == b"dkim-signature"]
        if not sigs:
            return [DkimResult("none", reason="no signature")]
        out: list[DkimResult] = []
        for idx, value in enumerate(sigs):
            tags = _lenient_tags(value)
            domain = _text(tags.get(b"d")).lower()
            selector = _text(tags.get(b"s"))
            algorithm = _text(tags.get(b"a")).lower()
            identity = _text(tags.get(b"i"))
            b = _text(tags.get(b"b"))[:8]
            bits: int | None = None
            if idx >= self.max_signatures:
                result, reason = "neutral", f"over {self.max_signatures} signatures"
            else:
                try:
                    result, reason, bits = self._verify_one(d, idx)
                except Exception as exc:  # whatever dkimpy raises: this signature only
                    result, reason = "permerror", f"{type(exc).__name__}: {exc}"
            out.append(DkimResult(result, domain, selector, algorithm, reason, identity, bits, b))
        return out

    def _verify_one(self, d: dkim.DKIM, idx: int) -> tuple[str, str, int | None]:
        try:
            prep = d.verify_headerprep(idx)
        except dkim.DKIMException as exc:
            return "permerror", f"malformed signature: {exc}", None
        if not prep:
            return "permerror", "signature not found", None
        sig, include_headers, sigheaders = prep
        if not sig.get(b"d") or not sig.get(b"s"):
            return "permerror", "empty d= or s=", None
        if b"from" not in include_headers:
            return "permerror", "From header field not signed", None
        alg = sig[b"a"].lower()
        if alg == b"rsa-sha1":
            return "permerror", "rsa-sha1 is not accepted (RFC 8301)", None
        name = sig[b"s"] + b"._domainkey." + sig[b"d"] + b"."
        try:
            pk, bits, ktag, seqtlsrpt = dkim.load_pk_from_dns(name, self._lookup, timeout=d.timeout)
        except TxtTemporaryError as exc:
            return "temperror", f"key lookup: {exc}", None
        except dkim.DnsTimeoutError as exc:
            return "temperror", f"key lookup: {exc}", None
        except dkim.KeyFormatError as exc:
            if "missing public key" in str(exc):
                return "permerror", "no key for signature", None
            return "permerror", f"bad key: {exc}", None
        if pk is None or ktag is None:
            return "permerror", "key not usable (service type)", None
        if _KEY_TYPE.get(alg) != ktag:
            return "permerror", f"key type k={ktag.decode()} does not match a={alg.decode()}", bits
        d.pk, d.keysize, d.ktag, d.seqtlsrpt = pk, bits, ktag, seqtlsrpt
        try:
            ok = d.verify_sig_process(sig, include_headers, sigheaders[idx], self._lookup)
        except dkim.ValidationError as exc:
            if "body hash mismatch" in str(exc):
                return "fail", "body hash did not verify", bits
            return "permerror", str(exc), bits
        except dkim.KeyFormatError as exc:
            return "permerror", f"bad key: {exc}", bits
        if ok:
            return "pass", "", bits
        return "fail", "signature did not verify", bits


# -- signing ---------------------------------------------------------------------


def load_private_key(algorithm: str, data: bytes) -> bytes:
    """A private key in the form dkimpy signs with, checked.

    RSA: PEM, PKCS#1 or PKCS#8 (unencrypted), at least 1024 bits; returned as
    PKCS#1 PEM. ed25519: PKCS#8 PEM (``openssl genpkey -algorithm ed25519``) or
    the base64 32-byte seed of RFC 8463; returned as the base64 seed.
    Raises ``ValueError`` for anything else.
    """
    data = data.strip()
    if algorithm == "rsa-sha256":
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"not an unencrypted PEM private key: {exc}") from None
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ValueError("rsa-sha256 needs an RSA key")
        if key.key_size < 1024:
            raise ValueError(f"RSA key of {key.key_size} bits is too small (RFC 8301)")
        return key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    if algorithm == "ed25519-sha256":
        if data.startswith(b"-----"):
            try:
                key = serialization.load_pem_private_key(data, password=None)
            except (ValueError, TypeError) as exc:
                raise ValueError(f"not an unencrypted PEM private key: {exc}") from None
            if not isinstance(key, ed25519.Ed25519PrivateKey):
                raise ValueError("ed25519-sha256 needs an Ed25519 key")
            seed = key.private_bytes(
                serialization.Encoding.Raw,
                serialization.PrivateFormat.Raw,
                serialization.NoEncryption(),
            )
        else:
            try:
                seed = base64.b64decode(data, validate=True)
            except ValueError:
                raise ValueError("ed25519 key is neither PEM nor a base64 seed") from None
            if len(seed) != 32:
                raise ValueError("ed25519 seed must be 32 bytes")
        return base64.b64encode(seed)
    raise ValueError(f"unknown algorithm {algorithm!r}; one of {', '.join(ALGORITHMS)}")


@dataclass(frozen=True)
class SigningKey:
    """One signing key: ``selector._domainkey.domain`` publishes its public half."""

    domain: str
    selector: str
    algorithm: str  # rsa-sha256 | ed25519-sha256
    key: bytes = field(repr=False)  # PEM (RSA or ed25519) or base64 ed25519 seed

    @classmethod
    def from_file(cls, domain: str, selector: str, algorithm: str, path: str | Path) -> SigningKey:
        return cls(domain, selector, algorithm, Path(path).read_bytes())


class DkimSigner:
    """Sign with every key of a domain; keys are checked at construction (``ValueError``)."""

    def __init__(self, keys: Sequence[SigningKey], headers: Sequence[str] = SIGN_HEADERS) -> None:
        self.headers = tuple(h.lower() for h in headers)
        if "from" not in self.headers:
            raise ValueError("the From header field must be signed")
        self._keys: dict[str, list[tuple[SigningKey, bytes]]] = {}
        for k in keys:
            try:
                material = load_private_key(k.algorithm, k.key)
            except ValueError as exc:
                raise ValueError(f"DKIM key {k.selector}._domainkey.{k.domain}: {exc}") from None
            domain = k.domain.lower().rstrip(".")
            self._keys.setdefault(domain, []).append((k, material))

    def domains(self) -> list[str]:
        return sorted(self._keys)

    def sign(self, message: bytes, domain: str) -> list[bytes]:
        """``DKIM-Signature`` header lines (CRLF-terminated) by every key of ``domain``."""
        keys = self._keys.get(domain.lower().rstrip("."), [])
        out: list[bytes] = []
        for key, material in keys:
            d = dkim.DKIM(message, signature_algorithm=key.algorithm.encode())
            present = {name.lower().decode("ascii", "replace") for name, _ in d.headers}
            include = [h for h in self.headers if h in present or h == "from"] + ["from"]
            out.append(
                d.sign(
                    key.selector.encode(),
                    key.domain.lower().rstrip(".").encode(),
                    material,
                    canonicalize=(b"relaxed", b"relaxed"),
                    include_headers=[h.encode() for h in include],
                )
            )
        return out
