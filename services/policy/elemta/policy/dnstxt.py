"""A synchronous TXT lookup for dkimpy's ``dnsfunc``, through the process's resolver.

dkimpy looks up public keys by calling ``dnsfunc(name, timeout=...)`` with a
byte-string name (``selector._domainkey.domain.``) and expects the TXT record's
strings joined into one byte string, or ``None`` when there is no record. The
checks run dkimpy in a worker thread (``asyncio.to_thread``), so this lookup is
blocking and thread-safe: :meth:`elemta.common.resolver.Resolver.resolve_blocking`,
the same cache and errors as every other lookup of the process.

dkimpy's own ``timeout`` argument is ignored in favour of ``dns.timeout``. Names
are absolute: no search list applies.

Outcomes::

    record found                 -> bytes (the strings of the first TXT record, joined)
    NXDOMAIN, no TXT, bad name   -> None  (dkimpy: "missing public key", a permanent error)
    timeout, SERVFAIL, no server -> TxtTemporaryError (a dkim.DnsTimeoutError)
"""

from __future__ import annotations

import logging

import dkim

from elemta.common.config import DnsSettings
from elemta.common.resolver import NoSuchDomain, Resolver, TemporaryDnsError

__all__ = ["TxtLookup", "TxtTemporaryError"]

log = logging.getLogger(__name__)


class TxtTemporaryError(dkim.DnsTimeoutError):
    """No answer now (timeout, SERVFAIL, no reachable server): a temporary error.

    It subclasses :class:`dkim.DnsTimeoutError` so that dkimpy's own code paths
    (ARC) treat it as the DNS timeout it knows.
    """


class TxtLookup:
    """``dnsfunc`` for dkimpy: ``lookup(b"sel._domainkey.example.com.") -> bytes | None``."""

    def __init__(self, dns: DnsSettings | Resolver) -> None:
        self.resolver = Resolver.of(dns)
        self.settings = self.resolver.settings

    def __call__(self, name: bytes | str, timeout: float = 5.0) -> bytes | None:
        try:
            text = name.decode("ascii") if isinstance(name, bytes) else name
        except UnicodeError:
            return None  # a name that cannot exist has no key
        try:
            records = self.resolver.resolve_blocking(text, "TXT")
        except NoSuchDomain:
            return None
        except TemporaryDnsError as exc:
            raise TxtTemporaryError(exc.text) from None
        for rdata in records:
            return b"".join(rdata.strings)  # type: ignore[attr-defined]
        return None
