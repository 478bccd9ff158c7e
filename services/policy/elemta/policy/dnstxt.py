"""A synchronous TXT lookup for dkimpy's ``dnsfunc``, configured from ``[dns]``.

dkimpy looks up public keys by calling ``dnsfunc(name, timeout=...)`` with a
byte-string name (``selector._domainkey.domain.``) and expects the TXT record's
strings joined into one byte string, or ``None`` when there is no record. The
checks run dkimpy in a worker thread (``asyncio.to_thread``), so this lookup is
blocking and thread-safe: one :class:`dns.resolver.Resolver` per instance, never
reconfigured after construction, with dnspython's locked LRU cache.

The resolver uses the nameservers, port and timeout of :class:`DnsSettings` (the
same settings as :class:`elemta.common.resolver.Resolver`); dkimpy's own
``timeout`` argument is ignored in favour of ``DnsSettings.timeout``. Names are
absolute: no search list applies.

Outcomes::

    record found                 -> bytes (the strings of the first TXT record, joined)
    NXDOMAIN, no TXT, bad name   -> None  (dkimpy: "missing public key", a permanent error)
    timeout, SERVFAIL, no server -> TxtTemporaryError (a dkim.DnsTimeoutError)
"""

from __future__ import annotations

import logging

import dkim
import dns.exception
import dns.name
import dns.rdatatype
import dns.resolver

from elemta.common.config import DnsSettings
from elemta.common.resolver import configured

__all__ = ["TxtLookup", "TxtTemporaryError"]

log = logging.getLogger(__name__)


class TxtTemporaryError(dkim.DnsTimeoutError):
    """No answer now (timeout, SERVFAIL, no reachable server): a temporary error.

    It subclasses :class:`dkim.DnsTimeoutError` so that dkimpy's own code paths
    (ARC) treat it as the DNS timeout it knows.
    """


class TxtLookup:
    """``dnsfunc`` for dkimpy: ``lookup(b"sel._domainkey.example.com.") -> bytes | None``."""

    def __init__(self, settings: DnsSettings) -> None:
        self.settings = settings
        self._res = configured(settings, dns.resolver.Resolver)

    def __call__(self, name: bytes | str, timeout: float = 5.0) -> bytes | None:
        try:
            text = name.decode("ascii") if isinstance(name, bytes) else name
            qname = dns.name.from_text(text)
        except (UnicodeError, dns.exception.DNSException, ValueError):
            return None  # a name that cannot exist has no key
        try:
            answer = self._res.resolve(
                qname, dns.rdatatype.TXT, search=False, raise_on_no_answer=False
            )
        except (dns.resolver.NXDOMAIN, dns.resolver.YXDOMAIN):
            return None
        except dns.exception.Timeout:
            raise TxtTemporaryError(f"{qname}: DNS lookup timed out") from None
        except dns.resolver.NoNameservers as exc:
            raise TxtTemporaryError(f"{qname}: no server could answer: {exc}") from None
        except dns.exception.DNSException as exc:
            raise TxtTemporaryError(f"{qname}: DNS lookup failed: {exc}") from None
        if answer.rrset is None:
            return None
        for rdata in answer.rrset:
            return b"".join(rdata.strings)  # type: ignore[attr-defined]
        return None
