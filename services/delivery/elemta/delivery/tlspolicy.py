"""Outbound TLS policy: what each connection to each host must achieve.

Levels, in Postfix's words (``smtp_tls_security_level``):

========  ==================================================================
none      no TLS, even when offered
may       STARTTLS when offered, certificate not checked; plain text when the
          handshake fails (opportunistic, RFC 7435)
encrypt   TLS required, certificate not checked
verify    TLS required, certificate chained to a trusted CA (``tls_ca_file`` or
          the system's) and valid for the host name
dane      DANE (RFC 7672) where the MX host publishes DNSSEC-validated TLSA
          records; otherwise as ``may`` (Postfix's opportunistic ``dane``)
========  ==================================================================

The level of a delivery comes from the first of: the relay entry of the
route's next hop (``delivery.relays``), ``delivery.tls_policy`` for that next
hop (``[host]:port``), for the recipient domain, for a parent domain
(``.example.org``), and ``delivery.tls_security_level``.

MTA-STS (RFC 8461) applies on top of ``may``, ``encrypt`` and ``dane`` (when
the host has no usable TLSA records: DANE takes precedence, RFC 8461 2) for
MX delivery, never to ``none`` or ``verify`` chosen by the administrator.
An ``enforce`` policy limits delivery to the MX hosts it lists and turns each
session into ``verify`` against the MX host name; a ``testing`` policy checks
and reports the same things without holding anything back.

DANE per host (RFC 7672 section 2): only when the MX answer is DNSSEC-secure
(for ``[host]`` routes there is no MX answer to check) and the host's
addresses are too, its TLSA records ``_<port>._tcp.<host>`` are looked up.
Secure records of which at least one is usable make TLS mandatory and
authenticated by them; records that are all unusable still make TLS
mandatory (``encrypt``); no records, or insecure ones, mean no DANE; a TLSA
lookup that fails makes the host unusable for now (4.4.3, next host).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from elemta.common.config import Config, RelaySettings, Route
from elemta.common.envelope import DeliveryJob
from elemta.common.replies import Reply
from elemta.common.resolver import DnsError, Resolver, TemporaryDnsError

from .dane import Tlsa, usable_for_smtp
from .errors import SessionFailure
from .mtasts import MtaSts, StsError, StsPolicy

__all__ = [
    "Destination",
    "Plan",
    "PolicyReport",
    "ResultSink",
    "TlsPolicy",
    "TlsRequirement",
]

log = logging.getLogger(__name__)

MANDATORY = frozenset({"encrypt", "verify", "dane"})


@dataclass(frozen=True)
class PolicyReport:
    """The policy a session was held to, as TLS-RPT (RFC 8460 4.4) names it."""

    policy_type: str  # "sts" | "tlsa"
    domain: str
    strings: tuple[str, ...] = ()
    mx_host: str = ""


class ResultSink(Protocol):
    """Takes the result of every session held to a policy (TLS-RPT, :mod:`.tlsrpt`).

    ``result`` is "" for a successful session, else an RFC 8460 result type.
    """

    def record(
        self,
        report: PolicyReport,
        result: str,
        host: str,
        addr: str,
        reason: str,
        local: str = "",
    ) -> None: ...


@dataclass(frozen=True)
class TlsRequirement:
    """What one session with one host must achieve."""

    level: str = "may"
    names: tuple[str, ...] = ()  # reference identifiers of the certificate
    sni: str | None = None
    tlsa: tuple[Tlsa, ...] = ()
    testing: bool = False  # check and report only (MTA-STS testing)
    report: PolicyReport | None = None
    implicit: bool = False  # TLS from the first byte (SMTPS)
    unusable_tlsa: bool = False  # TLSA records exist but none can be used: report tlsa-invalid
    tls_floor: bool = False  # TLS required by the administrator's level, whatever a policy says
    ca_file: str = ""
    relay: RelaySettings | None = None

    @property
    def mandatory(self) -> bool:
        """No TLS, no delivery: STARTTLS must be offered and the handshake succeed."""
        return self.tls_floor or (self.level in MANDATORY and not self.testing)

    @property
    def enforced(self) -> bool:
        """The certificate must hold (not only be checked and reported)."""
        return self.authenticated and not self.testing

    @property
    def authenticated(self) -> bool:
        """The certificate must be checked (or, when testing, is checked and reported)."""
        return self.level == "verify" or bool(self.tlsa)

    def key(self) -> tuple[object, ...]:
        """Sessions are shared only between jobs held to the same requirement."""
        return (
            self.level,
            self.names,
            self.sni,
            self.tlsa,
            self.testing,
            self.report,
            self.implicit,
            self.ca_file,
            id(self.relay) if self.relay else 0,
        )


@dataclass(frozen=True)
class Destination:
    """Where a job goes: the domain whose MX (if any) is looked up, and its level."""

    domain: str
    port: int
    mx_lookup: bool
    level: str
    relay: RelaySettings | None = None


@dataclass
class Plan:
    """The TLS side of one delivery: hosts allowed, and each host's requirement."""

    hosts: list[str]
    requirement: Callable[[str], Awaitable[TlsRequirement]]
    failure: Reply | None = None  # no host may be used at all
    sts_error: StsError | None = None  # discovery failed and no cached policy applies
    report: PolicyReport | None = None  # the MTA-STS policy, for TLS-RPT


class TlsPolicy:
    def __init__(self, cfg: Config, resolver: Resolver, mta_sts: MtaSts | None = None) -> None:
        d = cfg.delivery
        self.default = d.tls_security_level
        self.table = d.tls_policy
        self.relays = d.relays
        self.ca_file = d.tls_ca_file
        self.mx_port = d.smtp_port
        self.resolver = resolver
        self.mta_sts = mta_sts
        if self.default == "dane" or "dane" in self.table.values():
            if not cfg.dns.dnssec:
                log.warning(
                    "TLS level dane is configured but dns.dnssec is off: no DNS answer counts"
                    " as validated, so DANE never applies (falls back to may)"
                )

    # -- which level ---------------------------------------------------------------

    def destination(self, job: DeliveryJob, route: Route) -> Destination:
        if route.kind == "mx":
            domain, port, lookup = job.domain, self.mx_port, True
        else:
            domain, port, lookup = route.host, route.port, route.mx_lookup
        hop = f"[{domain.lower()}]:{port}"
        relay = self.relays.get(hop) if route.kind != "mx" else None
        if relay is not None:
            return Destination(domain, port, lookup, relay.security_level, relay)
        return Destination(domain, port, lookup, self._level(job.domain, hop))

    def _level(self, rcpt_domain: str, hop: str) -> str:
        for key in (hop, hop.rpartition(":")[0]):
            if key in self.table:
                return self.table[key]
        name = rcpt_domain.lower().rstrip(".")
        if name in self.table:
            return self.table[name]
        while "." in name:
            name = name.partition(".")[2]
            if f".{name}" in self.table:
                return self.table[f".{name}"]
        return self.default

    # -- the plan for one delivery ------------------------------------------------------

    async def plan(self, dest: Destination, hosts: list[str], mx_secure: bool) -> Plan:
        sts: StsPolicy | None = None
        sts_error: StsError | None = None
        if (
            self.mta_sts is not None
            and dest.mx_lookup
            and dest.relay is None
            and dest.level in ("may", "encrypt", "dane")
        ):
            lookup = await self.mta_sts.lookup(dest.domain)
            sts, sts_error = lookup.policy, lookup.error
        allowed = hosts
        failure: Reply | None = None
        report = _sts_report(dest.domain, sts) if sts is not None else None
        if sts is not None and sts.mode == "enforce":
            allowed = [h for h in hosts if sts.allows(h)]
            if not allowed:
                failure = Reply(
                    451,
                    "4.7.5",
                    f"MTA-STS policy of {dest.domain} allows none of its MX hosts"
                    f" ({', '.join(hosts)})",
                )

        async def requirement(host: str) -> TlsRequirement:
            return await self._requirement(dest, host, mx_secure, sts)

        if sts is not None:
            sts_error = None  # a cached policy applies: nothing failed for the sender
        return Plan(allowed, requirement, failure, sts_error, report)

    async def _requirement(
        self, dest: Destination, host: str, mx_secure: bool, sts: StsPolicy | None
    ) -> TlsRequirement:
        level = dest.level
        if dest.relay is not None:
            return TlsRequirement(
                level=level,
                names=(host,),
                sni=host,
                implicit=dest.relay.implicit_tls,
                ca_file=dest.relay.ca_file or self.ca_file,
                relay=dest.relay,
            )
        if level == "dane":
            dane = await self._dane(dest, host, mx_secure)
            if dane is not None:
                return dane
            level = "may"  # no DANE for this host: opportunistic, or MTA-STS below
        if sts is not None:
            report = _sts_report(dest.domain, sts)
            return TlsRequirement(
                level="verify",
                names=(host,),
                sni=host,
                testing=sts.mode == "testing",
                report=report,
                ca_file=self.ca_file,
                tls_floor=level in MANDATORY,
            )
        return TlsRequirement(level=level, names=(host,), sni=host, ca_file=self.ca_file)

    async def _dane(self, dest: Destination, host: str, mx_secure: bool) -> TlsRequirement | None:
        if dest.mx_lookup and not mx_secure:
            return None  # RFC 7672 2.2.1: an insecure MX RRset rules DANE out
        try:
            _addresses, secure = await self.resolver.addresses_secure(host)
        except DnsError:
            return None  # the session attempt itself reports the address failure
        if not secure:
            return None
        qname = f"_{dest.port}._tcp.{host}"
        try:
            records, secure = await self.resolver.resolve_secure(qname, "TLSA")
        except TemporaryDnsError as exc:
            raise SessionFailure(
                Reply(451, "4.4.3", f"TLSA lookup of {qname} failed: {exc.text}")
            ) from None
        except DnsError:
            return None  # NXDOMAIN: no TLSA records
        if not records or not secure:
            return None
        tlsa = [
            Tlsa(r.usage, r.selector, r.mtype, r.cert)  # type: ignore[attr-defined]
            for r in records
        ]
        usable = usable_for_smtp(tlsa)
        report = PolicyReport("tlsa", dest.domain, tuple(str(t) for t in tlsa), host)
        if not usable:
            log.info("%s: no usable TLSA record among %d; TLS is still required", qname, len(tlsa))
            return TlsRequirement(
                level="encrypt", names=(host,), sni=host, report=report, unusable_tlsa=True
            )
        # The TLSA base domain is the MX host name: the reference identifier
        # for DANE-TA and the SNI name (RFC 7672 3.2.2, 8.1).
        return TlsRequirement(
            level="dane", names=(host,), sni=host, tlsa=tuple(usable), report=report
        )


def _sts_report(domain: str, sts: StsPolicy) -> PolicyReport:
    return PolicyReport("sts", domain, tuple(sts.lines), ",".join(sts.mx))
