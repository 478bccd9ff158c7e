"""The one DNS resolver of a process: MX, addresses and raw lookups.

A service makes one :class:`Resolver` and hands it to every part that looks
something up (in policy: SPF, DKIM, ARC, DMARC and DNSBL; in delivery: MX), so
that they share one cache and one translation of DNS failures into mail errors.
It wraps :class:`dns.asyncresolver.Resolver` with the settings of ``[dns]``
(nameservers, port, timeout) and a bounded cache that honours TTLs
(:class:`dns.resolver.LRUCache`, thread-safe); :meth:`Resolver.resolve_blocking`
answers from the same cache, with the same errors, for libraries that run in a
worker thread (pyspf, dkimpy). Negative answers are cached as RFC 2308 says:
for the SOA minimum of the authority section (dnspython's default of 300 s when
a server sends no SOA). Temporary failures (SERVFAIL, timeouts) are never cached.
Identical lookups that are in flight at the same time share one query.

Every name is absolute: the search list of ``resolv.conf`` never applies.

Lookups fail with one of these exceptions, each carrying the SMTP reply an MTA
would give for it (``code``, ``enhanced`` status code per RFC 3463 and ``text``),
and each on its side of :mod:`elemta.common.replies`' permanent/temporary pair::

    DnsError (ReplyError)                     .code .enhanced .text
    ├── PermanentDnsError (PermanentError)    550 5.1.2  the answer is final: do not retry
    │   ├── NoSuchDomain                      550 5.1.2  NXDOMAIN (or a name that cannot exist)
    │   └── NullMx                            556 5.1.10 RFC 7505 null MX: no mail
    └── TemporaryDnsError (TemporaryError)    451 4.4.3  SERVFAIL, timeout, no usable server

MX lookups follow RFC 5321 section 5.1: hosts sorted by preference (equal
preferences in random order); no MX records means the domain itself is the
only host, provided it has an address (the implicit MX).

DNSSEC: every query asks for the AD bit (RFC 6840 5.7). With ``dns.dnssec``
on, the configured nameservers are trusted to validate, and the ``*_secure``
lookups (:meth:`Resolver.resolve_secure`, :meth:`Resolver.mx_secure`,
:meth:`Resolver.addresses_secure`) say whether the answer was
DNSSEC-validated: the AD bit of the answer, as Postfix reads it with
``smtp_dns_support_level = dnssec``. Without it nothing counts as secure.
DANE (RFC 7672) needs this; nothing else depends on it.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from itertools import groupby
from typing import Any, TypeVar

import dns.asyncresolver
import dns.exception
import dns.flags
import dns.name
import dns.rdata
import dns.rdatatype
import dns.resolver

from .config import DnsSettings
from .replies import PermanentError, ReplyError, TemporaryError

__all__ = [
    "configured",
    "DnsError",
    "MxHost",
    "NoSuchDomain",
    "NullMx",
    "PermanentDnsError",
    "Resolver",
    "TemporaryDnsError",
]

log = logging.getLogger(__name__)


class DnsError(ReplyError):
    """A lookup failed; ``code``/``enhanced``/``text`` read as an SMTP reply."""

    code = 451
    enhanced = "4.4.3"


class PermanentDnsError(DnsError, PermanentError):
    """The DNS answered, and the answer rules delivery out."""

    code = 550
    enhanced = "5.1.2"


class NoSuchDomain(PermanentDnsError):
    """NXDOMAIN: the name does not exist."""


class NullMx(PermanentDnsError):
    """RFC 7505: the domain publishes ``MX 0 .`` and accepts no mail."""

    code = 556
    enhanced = "5.1.10"


class TemporaryDnsError(DnsError, TemporaryError):
    """No answer now (SERVFAIL, timeout, no nameserver reachable); try again later."""

    code = 451
    enhanced = "4.4.3"


@dataclass(frozen=True, order=True)
class MxHost:
    preference: int
    host: str  # lower case, no trailing dot


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


_R = TypeVar("_R", bound=dns.resolver.BaseResolver)


def configured(
    settings: DnsSettings,
    factory: Callable[..., _R],
    cache: dns.resolver.LRUCache | None | bool = True,
) -> _R:
    """A dnspython resolver (``dns.resolver.Resolver`` for code that runs in a
    thread, or the asyncio one) set from ``[dns]``: nameservers and port,
    whole-lookup timeout, and ``cache`` (True: a new TTL-honouring cache of
    ``cache_size``; or the cache to share; None: none)."""
    try:
        res = factory(configure=not settings.nameservers)
    except dns.resolver.NoResolverConfiguration:
        log.warning("no resolver configuration (resolv.conf); every lookup will fail")
        res = factory(configure=False)
        res.nameservers = []
    if settings.nameservers:
        res.port = settings.port  # before the nameservers, which take it as their port
        res.nameservers = list(settings.nameservers)
    res.lifetime = settings.timeout
    res.timeout = min(2.0, settings.timeout)  # per server try, within the lifetime
    if cache is True:
        cache = dns.resolver.LRUCache(settings.cache_size) if settings.cache_size else None
    res.cache = cache or None
    res.flags = dns.flags.RD | dns.flags.AD  # ask for the AD bit (RFC 6840 5.7)
    return res


def _qname(name: str) -> dns.name.Name:
    try:
        return dns.name.from_text(name)
    except (dns.exception.DNSException, UnicodeError) as exc:
        raise NoSuchDomain(f"invalid domain name {name!r}: {exc}") from None


def _translate(name: str, rdtype: str, exc: dns.exception.DNSException) -> DnsError:
    """The one translation of a dnspython failure into a mail error."""
    if isinstance(exc, dns.resolver.NXDOMAIN):
        return NoSuchDomain(f"{name}: domain not found (NXDOMAIN)")
    if isinstance(exc, dns.resolver.YXDOMAIN):
        return NoSuchDomain(f"{name}: name too long after DNAME substitution")
    if isinstance(exc, dns.resolver.NoNameservers):
        return TemporaryDnsError(f"{name}/{rdtype}: no server could answer: {exc}")
    if isinstance(exc, dns.exception.Timeout):
        return TemporaryDnsError(f"{name}/{rdtype}: DNS lookup timed out")
    return TemporaryDnsError(f"{name}/{rdtype}: DNS lookup failed: {exc}")


class Resolver:
    """Cached asynchronous lookups with errors split into permanent and temporary."""

    def __init__(self, settings: DnsSettings) -> None:
        self.settings = settings
        self.cache = dns.resolver.LRUCache(settings.cache_size) if settings.cache_size else None
        self._res = configured(settings, dns.asyncresolver.Resolver, self.cache)
        self._blocking = configured(settings, dns.resolver.Resolver, self.cache)
        self._pending: dict[tuple[str, str], asyncio.Future[tuple[list[Any], bool]]] = {}

    @classmethod
    def of(cls, dns_: DnsSettings | Resolver) -> Resolver:
        """``dns_`` itself when it is a resolver (the process's shared one), else a new one."""
        return dns_ if isinstance(dns_, Resolver) else cls(dns_)

    # -- generic ---------------------------------------------------------------

    async def resolve(self, name: str, rdtype: str) -> list[dns.rdata.Rdata]:
        """Records of ``rdtype`` for ``name``; [] when the name exists without any.

        Raises :class:`NoSuchDomain` for NXDOMAIN and :class:`TemporaryDnsError`
        when no server gave an answer.
        """
        return (await self.resolve_secure(name, rdtype))[0]

    async def resolve_secure(self, name: str, rdtype: str) -> tuple[list[dns.rdata.Rdata], bool]:
        """As :meth:`resolve`, and whether the answer (or the absence of records)
        was DNSSEC-validated by a trusted resolver (``dns.dnssec``)."""
        key = (name.lower().rstrip("."), rdtype.upper())
        fut = self._pending.get(key)
        if fut is None:
            fut = asyncio.ensure_future(self._query(*key))
            self._pending[key] = fut
            fut.add_done_callback(functools.partial(self._forget, key))
        records, secure = await asyncio.shield(fut)
        return list(records), secure and self.settings.dnssec

    def _forget(self, key: tuple[str, str], fut: asyncio.Future[tuple[list[Any], bool]]) -> None:
        if self._pending.get(key) is fut:
            del self._pending[key]
        if not fut.cancelled():
            fut.exception()  # retrieved, even when every waiter was cancelled

    async def _query(self, name: str, rdtype: str) -> tuple[list[dns.rdata.Rdata], bool]:
        qname = _qname(name)
        try:
            answer = await self._res.resolve(qname, rdtype, search=False, raise_on_no_answer=False)
        except dns.exception.DNSException as exc:
            raise _translate(name, rdtype, exc) from None
        secure = bool(answer.response.flags & dns.flags.AD)
        if answer.rrset is None:
            return [], secure
        return list(answer.rrset), secure

    def resolve_blocking(
        self, name: str, rdtype: str, lifetime: float | None = None
    ) -> list[dns.rdata.Rdata]:
        """:meth:`resolve` for code in a worker thread (pyspf, dkimpy): the same
        cache and errors; ``lifetime`` caps this lookup below ``dns.timeout``."""
        qname = _qname(name)
        try:
            answer = self._blocking.resolve(
                qname, rdtype, search=False, raise_on_no_answer=False, lifetime=lifetime
            )
        except dns.exception.DNSException as exc:
            raise _translate(name, rdtype, exc) from None
        return [] if answer.rrset is None else list(answer.rrset)

    async def txt(self, name: str) -> list[str]:
        """TXT records, each joined from its strings (SPF, DKIM, DMARC)."""
        records = await self.resolve(name, "TXT")
        return [b"".join(r.strings).decode("utf-8", "replace") for r in records]  # type: ignore[attr-defined]

    # -- mail routing ----------------------------------------------------------

    async def addresses(self, host: str) -> list[str]:
        """IPv4 then IPv6 addresses of ``host`` (an address literal is itself).

        Raises :class:`PermanentDnsError` (5.4.4) when the host has none and
        :class:`TemporaryDnsError` when that cannot be known now.
        """
        return (await self.addresses_secure(host))[0]

    async def addresses_secure(self, host: str) -> tuple[list[str], bool]:
        """As :meth:`addresses`, and whether every answer was DNSSEC-validated."""
        host = host.strip().strip("[]")
        if host.lower().startswith("ipv6:"):
            host = host[5:]
        if _is_ip(host):
            return [host], False
        results = await asyncio.gather(
            self.resolve_secure(host, "A"),
            self.resolve_secure(host, "AAAA"),
            return_exceptions=True,
        )
        out: list[str] = []
        errors: list[BaseException] = []
        secure = True
        for res in results:
            if isinstance(res, BaseException):
                errors.append(res)
                secure = False
            else:
                out.extend(r.to_text() for r in res[0])
                secure = secure and res[1]
        if out:
            return out, secure
        for err in errors:
            if not isinstance(err, DnsError):
                raise err
            if isinstance(err, TemporaryDnsError):
                raise err
        raise PermanentDnsError(f"{host}: host has no address (A/AAAA)", enhanced="5.4.4")

    async def mx(self, domain: str) -> list[MxHost]:
        """Mail exchangers of ``domain``, best first (RFC 5321 section 5.1).

        Raises :class:`NullMx` for RFC 7505 null MX, :class:`NoSuchDomain` for
        NXDOMAIN, :class:`PermanentDnsError` (5.1.2) for a domain with neither MX
        nor address, :class:`TemporaryDnsError` when the DNS does not answer.
        """
        return (await self.mx_secure(domain))[0]

    async def mx_secure(self, domain: str) -> tuple[list[MxHost], bool]:
        """As :meth:`mx`, and whether the MX answer was DNSSEC-validated (RFC 7672 2.2.1)."""
        domain = domain.lower().rstrip(".")
        records, secure = await self.resolve_secure(domain, "MX")
        hosts = [
            MxHost(int(r.preference), r.exchange.to_text(omit_final_dot=True).lower())  # type: ignore[attr-defined]
            for r in records
        ]
        if any(h.host == "." for h in hosts):
            real = [h for h in hosts if h.host != "."]
            if not real:
                raise NullMx(f"{domain} does not accept mail (null MX)")
            hosts = real  # a null MX mixed with real ones is a mistake; RFC 7505 3
        if not hosts:
            try:
                await self.addresses(domain)
            except PermanentDnsError:
                raise PermanentDnsError(f"{domain}: no MX and no address records") from None
            return [MxHost(0, domain)], secure
        hosts.sort()
        out: list[MxHost] = []
        for _pref, group in groupby(hosts, key=lambda h: h.preference):
            same = list(group)
            random.shuffle(same)
            out.extend(same)
        return out, secure
