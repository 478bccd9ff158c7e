"""SPF (RFC 7208) for the MAIL FROM identity, or the HELO identity for a null sender.

The evaluation is pyspf's (``spf.query``); the DNS is ours. pyspf sends every
lookup through one method, :meth:`spf.query.dns`, which calls the module-level
``spf.DNSLookup``. Rather than replace that global (which would change pyspf for
every other user in the process), :class:`_Query` subclasses ``spf.query`` and
overrides ``dns()`` so that its lookups go to the process's
:class:`~elemta.common.resolver.Resolver` (its cache and settings, through
:meth:`~elemta.common.resolver.Resolver.resolve_blocking`). ``_Query.dns`` is a port
of pyspf 2.0.14's ``query.dns`` (cache of the answers, the per-check time budget,
the RFC 7208 4.6.4 void-lookup limit) with two changes: the lookup goes to our
resolver, and CNAME chains are left to the resolver, which follows them (as
pyspf's own dnspython backend does; it never returns CNAME entries either).
``_Query.validated_ptrs`` skips a PTR name whose address lookup fails, as RFC
7208 5.5 asks, where pyspf would end the check with temperror. pyspf is licensed
under the PSF licence version 2; those are the changes to it.

The lookup answers in pyspf's format (``DNSLookup_dnspython``): a list of
``((name, qtype), value)`` with the queried name and type as key; the value is
the address text for A/AAAA, ``(preference, exchange)`` for MX, the target
without its final dot for PTR, the tuple of byte strings for TXT/SPF. NXDOMAIN
and an empty answer are ``[]``; a timeout, SERVFAIL or an unreachable server
raise ``spf.TempError``.

pyspf is synchronous, so :meth:`SpfChecker.check` runs it in a worker thread
(``asyncio.to_thread``): the event loop never waits on the DNS. A check never
raises: whatever goes wrong becomes a ``temperror`` with the reason.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import time
from dataclasses import dataclass
from typing import Any

import dns.name
import spf

from elemta.common.config import DnsSettings
from elemta.common.resolver import NoSuchDomain, Resolver, TemporaryDnsError

__all__ = ["RESULTS", "SpfChecker", "SpfResult"]

log = logging.getLogger(__name__)

RESULTS = ("pass", "fail", "softfail", "neutral", "none", "temperror", "permerror")

# RFC 7208 4.6.4: a check SHOULD be allowed at least 20 seconds in all.
DEFAULT_QUERYTIME = 20.0

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_DOT_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*\Z")


def _lookup(
    resolver: Resolver, name: str, qtype: str, lifetime: float
) -> list[tuple[tuple[str, str], Any]]:
    """One lookup, answered in the format of pyspf's ``DNSLookup``."""
    try:
        records = resolver.resolve_blocking(name, qtype, lifetime=max(lifetime, 0.001))
    except NoSuchDomain:  # NXDOMAIN, or a name that cannot exist: no records
        return []
    except TemporaryDnsError as exc:
        raise spf.TempError(f"DNS {exc.text}") from None
    key = (name, qtype)
    out: list[tuple[tuple[str, str], Any]] = []
    for rdata in records:
        if qtype in ("A", "AAAA"):
            out.append((key, rdata.address))  # type: ignore[attr-defined]
        elif qtype == "MX":
            exchange = rdata.exchange  # type: ignore[attr-defined]
            # the null MX "." has no host: "" makes pyspf's dns_a answer [] at once
            host = "" if exchange == dns.name.root else exchange.to_text(omit_final_dot=True)
            out.append((key, (int(rdata.preference), host)))  # type: ignore[attr-defined]
        elif qtype == "PTR":
            out.append((key, rdata.target.to_text(True)))  # type: ignore[attr-defined]
        elif qtype in ("TXT", "SPF"):
            out.append((key, tuple(rdata.strings)))  # type: ignore[attr-defined]
    return out


class _Query(spf.query):  # type: ignore[misc]
    """``spf.query`` whose DNS lookups go to this checker's resolver."""

    querytime: float  # set by spf.query: seconds left of the check's time budget
    timeout: float

    def __init__(self, resolver: Resolver, lookup_timeout: float, **kw: Any) -> None:
        super().__init__(**kw)
        self._resolver = resolver
        self._lookup_timeout = lookup_timeout

    def dns(
        self, name: Any, qtype: str, cnames: Any = None, ignore_void: bool = False
    ) -> list[Any]:
        if not name:
            raise spf.PermError("empty domain name in a DNS lookup")
        name = str(name)
        if name.endswith("."):
            name = name[:-1]
        if not all(0 < len(label) < 64 for label in name.split(".")):
            return []  # invalid DNS name (empty or too long label)
        name = name.lower()
        result: list[Any] = self.cache.get((name, qtype), [])
        if result:
            return result
        querytime: float = self.querytime  # what is left of the check's time budget
        if querytime < 0:
            raise spf.TempError("DNS Error: exceeded max query lookup time")
        timeout: float = querytime if 0 < querytime < self.timeout else self.timeout
        started = time.monotonic()
        answers = _lookup(self._resolver, name, qtype, min(timeout, self._lookup_timeout))
        for k, v in answers:
            k = (k[0].lower(), k[1])
            if k[1] == "CNAME" or (qtype, k[1]) in spf.query.SAFE2CACHE:
                self.cache.setdefault(k, []).append(v)
        result = self.cache.get((name, qtype), [])
        if querytime > 0:
            self.querytime = querytime - (time.monotonic() - started)
        if not result and not ignore_void:
            self.void_lookups += 1
            if self.void_lookups > spf.MAX_VOID_LOOKUPS:
                raise spf.PermError(f"Void lookup limit of {spf.MAX_VOID_LOOKUPS} exceeded")
        return result

    def validated_ptrs(self) -> list[str]:
        # RFC 7208 5.5: "If a DNS error occurs while doing an A RR lookup, then
        # that domain name is skipped and the search continues."
        limit = spf.MAX_PTR if self.strict else spf.MAX_PTR * 4
        out: list[str] = []
        for ptr in self.dns_ptr(self.i)[:limit]:
            try:
                addresses = self.dns_a(ptr, self.A)
            except spf.TempError:
                continue
            if self.cidrmatch(addresses, self.cidrmax):
                out.append(ptr)
        return out


def _comment_text(text: str) -> str:
    """Text safe inside an RFC 5322 comment: no controls, parentheses quoted."""
    text = _CONTROL.sub(" ", text)
    return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def _value(text: str) -> str:
    """An RFC 7208 9.1 key-value value: dot-atom as is, otherwise a quoted-string."""
    text = _CONTROL.sub(" ", text)
    if _DOT_ATOM.match(text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True)
class SpfResult:
    """The outcome of one check_host() (RFC 7208 section 4)."""

    result: str  # one of RESULTS
    explanation: str
    domain: str  # the domain checked: of MAIL FROM, or the HELO name for a null sender
    client_ip: str = ""
    envelope_from: str = ""  # the MAIL FROM identity (postmaster@helo for a null sender)
    helo: str = ""
    identity: str = "mailfrom"  # "mailfrom" or "helo" (RFC 7208 2.4)
    problem: str = ""  # what went wrong, for temperror and permerror

    def received_spf_header(self, receiver: str) -> tuple[str, str]:
        """The RFC 7208 section 9.1 ``Received-SPF`` header field (name, value)."""
        ip, sender = self.client_ip, self.envelope_from or self.domain
        comments = {
            "pass": f"domain of {sender} designates {ip} as permitted sender",
            "fail": f"domain of {sender} does not designate {ip} as permitted sender",
            "softfail": f"transitioning domain of {sender} does not designate {ip}"
            " as permitted sender",
            "neutral": f"{ip} is neither permitted nor denied by domain of {sender}",
            "none": f"domain of {sender} does not publish an SPF record",
            "temperror": f"temporary error in processing during lookup of {sender}",
            "permerror": f"permanent error in processing domain of {sender}",
        }
        comment = _comment_text(f"{receiver}: {comments.get(self.result, self.result)}")
        pairs = [
            ("receiver", receiver),
            ("client-ip", ip),
            ("envelope-from", self.envelope_from),
            ("helo", self.helo),
        ]
        if self.problem and self.result in ("temperror", "permerror"):
            pairs.append(("problem", self.problem))
        pairs.append(("identity", self.identity))
        kv = "; ".join(f"{k}={_value(v)}" for k, v in pairs)
        return "Received-SPF", f"{self.result} ({comment}) {kv};"


class SpfChecker:
    """Checks senders against SPF through the process's resolver (or one made from
    ``[dns]`` settings).

    ``querytime`` bounds a whole check (RFC 7208 4.6.4), ``settings.timeout``
    each lookup; ``default_explanation`` replaces pyspf's text for fail,
    softfail and permerror when the domain gives no ``exp=``.
    """

    def __init__(
        self,
        dns: DnsSettings | Resolver,
        *,
        querytime: float = DEFAULT_QUERYTIME,
        default_explanation: str | None = None,
    ) -> None:
        self._resolver = Resolver.of(dns)
        self.settings = self._resolver.settings
        self.querytime = querytime
        self.default_explanation = default_explanation

    async def check(self, ip: str, mail_from: str, helo: str) -> SpfResult:
        """check_host() for the MAIL FROM identity (HELO when the sender is null)."""
        mail_from = (mail_from or "").strip()
        if mail_from.startswith("<") and mail_from.endswith(">"):
            mail_from = mail_from[1:-1].strip()
        helo = (helo or "").strip()
        try:
            return await asyncio.to_thread(self._check, ip, mail_from, helo)
        except Exception as exc:  # never let SPF take the policy service down
            log.exception("SPF check failed for ip=%s mail_from=%r helo=%r", ip, mail_from, helo)
            return self._error(ip, mail_from, helo, f"{type(exc).__name__}: {exc}")

    def _error(self, ip: str, mail_from: str, helo: str, problem: str) -> SpfResult:
        if mail_from:
            domain = mail_from.rsplit("@", 1)[-1]
            identity, sender = "mailfrom", mail_from
        else:
            domain, identity, sender = helo, "helo", f"postmaster@{helo}"
        return SpfResult(
            result="temperror",
            explanation=f"SPF Temporary Error: {problem}",
            domain=domain.lower(),
            client_ip=ip,
            envelope_from=sender,
            helo=helo,
            identity=identity,
            problem=problem,
        )

    def _check(self, ip: str, mail_from: str, helo: str) -> SpfResult:
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            return self._error(ip, mail_from, helo, f"invalid client address {ip!r}")
        q = _Query(
            self._resolver,
            self.settings.timeout,
            i=ip,
            s=mail_from,
            h=helo,
            querytime=self.querytime,
        )
        if self.default_explanation is not None:
            q.set_default_explanation(self.default_explanation)
        result, _code, explanation = q.check()
        if result not in RESULTS:  # pyspf's harsh-mode "ambiguous" cannot happen here
            result = "permerror"
        problem = ""
        if result in ("temperror", "permerror"):
            problem = str(getattr(q, "prob", "") or explanation)
        return SpfResult(
            result=result,
            explanation=str(explanation),
            domain=str(q.o).lower(),
            client_ip=str(q.c),
            envelope_from=str(q.s),
            helo=helo,
            identity=str(q.ident),
            problem=problem,
        )
