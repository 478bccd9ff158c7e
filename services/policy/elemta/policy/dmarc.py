"""DMARC (RFC 7489, with RFC 9091's ``np`` and public-suffix-domain records).

:class:`DmarcEvaluator` finds the policy record of an RFC5322.From domain
(``_dmarc.<domain>``, else ``_dmarc.<organisational domain>``, else a PSD record
with ``psd=y`` at ``_dmarc.<public suffix>``), checks SPF and DKIM alignment and
picks the policy: ``p`` for the domain that owns the record, ``sp`` for its
subdomains, ``np`` for subdomains that do not exist (RFC 9091: NXDOMAIN or NODATA
for A, AAAA and MX). ``pct`` sampling turns a failing message's policy into its
disposition: ``reject`` becomes ``quarantine`` and ``quarantine`` becomes
``none`` for messages outside the sample (RFC 7489 6.6.4).

:func:`enforcement_verdict` maps a result to a pipeline :class:`Verdict` and
:func:`auth_results_fragment` renders the ``dmarc=`` part of
Authentication-Results.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from dataclasses import dataclass

from elemta.common.config import DnsSettings
from elemta.common.resolver import DnsError, NoSuchDomain, Resolver, TemporaryDnsError

from .checks import ACCEPT, HOLD, REJECT, Verdict
from .dmarcrecord import (
    AuthorDomains,
    DmarcRecord,
    DmarcRecordError,
    aligned,
    is_dmarc_record,
    normalize,
    org_domain,
    parse_record,
    public_suffix,
)

__all__ = [
    "DmarcEvaluator",
    "DmarcResult",
    "auth_results_fragment",
    "enforcement_verdict",
]

PASS, FAIL, NONE, TEMPERROR, PERMERROR = "pass", "fail", "none", "temperror", "permerror"
_STRICTNESS = {"none": 0, "quarantine": 1, "reject": 2}
_WEAKER = {"reject": "quarantine", "quarantine": "none", "none": "none"}


@dataclass(frozen=True)
class DmarcResult:
    result: str  # pass | fail | none | temperror | permerror
    policy: str = "none"  # the requested policy that applies: none | quarantine | reject
    disposition: str = "none"  # what to do, after pct sampling
    domain: str = ""  # the RFC5322.From domain
    record: DmarcRecord | None = None
    source: str = ""  # where the record was found: from | org | psd
    reason: str = ""
    spf_aligned: bool = False
    dkim_aligned: bool = False


class _Discovered:
    def __init__(self, record: DmarcRecord, source: str, base: str) -> None:
        self.record, self.source, self.base = record, source, base


class _NoDmarc(Exception):
    """RFC 7489 6.6.3: policy discovery ends and DMARC does not apply."""


class DmarcEvaluator:
    """Evaluates DMARC for one message's authentication results.

    ``rng`` is the random source for ``pct`` sampling; tests pass a seeded one.
    """

    def __init__(
        self,
        dns: DnsSettings | Resolver,
        *,
        rng: random.Random | None = None,
        resolver: Resolver | None = None,
    ) -> None:
        self.resolver = resolver or Resolver.of(dns)
        self.rng = rng or random.Random()

    async def evaluate(
        self,
        from_header_domain: str,
        spf_result: str,
        spf_domain: str,
        dkim_results: Sequence[tuple[str, str]],
    ) -> DmarcResult:
        """DMARC for one Author Domain. ``spf_result``/``spf_domain``: the SPF result
        and the MAIL FROM (or HELO) domain it was for; ``dkim_results``: ``(result,
        d=)`` of each signature."""
        domain = normalize(from_header_domain)
        if not domain:
            return DmarcResult(PERMERROR, reason="no From domain")
        try:
            found = await self._discover(domain)
        except TemporaryDnsError as exc:
            return DmarcResult(TEMPERROR, domain=domain, reason=exc.text)
        except _NoDmarc as exc:
            return DmarcResult(NONE, domain=domain, reason=str(exc))
        except DmarcRecordError as exc:
            return DmarcResult(PERMERROR, domain=domain, reason=str(exc))
        if found is None:
            return DmarcResult(NONE, domain=domain, reason="no DMARC record")
        rec = found.record
        spf_ok = spf_result.strip().lower() == PASS and aligned(domain, spf_domain, rec.aspf)
        dkim_ok = any(
            r.strip().lower() == PASS and aligned(domain, d, rec.adkim) for r, d in dkim_results
        )
        policy = await self._policy(domain, found)
        common = {
            "domain": domain,
            "record": rec,
            "source": found.source,
            "spf_aligned": spf_ok,
            "dkim_aligned": dkim_ok,
        }
        if spf_ok or dkim_ok:
            return DmarcResult(PASS, policy=policy, **common)  # type: ignore[arg-type]
        disposition = policy
        if policy != "none" and self.rng.random() * 100 >= rec.pct:
            disposition = _WEAKER[policy]
        return DmarcResult(FAIL, policy=policy, disposition=disposition, **common)  # type: ignore[arg-type]

    async def evaluate_author(
        self,
        author: AuthorDomains,
        spf_result: str,
        spf_domain: str,
        dkim_results: Sequence[tuple[str, str]],
    ) -> DmarcResult:
        """DMARC for a message's From field(s) (RFC 7489 6.6.1): no usable From or
        several From fields is a permerror; several addresses are each checked and
        the failure with the strictest policy wins."""
        if author.problem in ("missing", "unparseable"):
            why = "no From field" if author.problem == "missing" else author.raw
            return DmarcResult(PERMERROR, reason=f"Unable to extract From domain: {why}")
        if author.problem == "multiple-fields":
            return DmarcResult(PERMERROR, reason="more than one From field")
        domains = list(dict.fromkeys(author.domains))
        results = await asyncio.gather(
            *(self.evaluate(d, spf_result, spf_domain, dkim_results) for d in domains)
        )
        return max(results, key=_severity)

    # -- discovery (RFC 7489 6.6.3, RFC 9091 4) ---------------------------------------

    async def _records(self, domain: str) -> list[str]:
        try:
            texts = await self.resolver.txt(f"_dmarc.{domain}")
        except TemporaryDnsError:
            raise
        except DnsError:
            return []
        return [t for t in texts if is_dmarc_record(t)]

    async def _at(self, domain: str) -> DmarcRecord | None:
        records = await self._records(domain)
        if not records:
            return None
        if len(records) > 1:
            raise _NoDmarc(f"_dmarc.{domain} has {len(records)} DMARC records")
        try:
            return parse_record(records[0])
        except DmarcRecordError as exc:
            if exc.policy_problem:
                raise _NoDmarc(str(exc)) from None
            raise

    async def _discover(self, domain: str) -> _Discovered | None:
        org = org_domain(domain)
        rec = await self._at(domain)
        if rec is not None:
            return _Discovered(rec, "from", domain)
        if org != domain:
            rec = await self._at(org)
            if rec is not None:
                return _Discovered(rec, "org", org)
        suffix = public_suffix(org)
        if suffix and suffix != org:
            try:
                rec = await self._at(suffix)
            except (DmarcRecordError, _NoDmarc):
                rec = None
            if rec is not None and rec.psd == "y":
                return _Discovered(rec, "psd", org)
        return None

    async def _policy(self, domain: str, found: _Discovered) -> str:
        rec = found.record
        if domain == found.base:
            return rec.p
        if rec.nonexistent_policy != rec.subdomain_policy and not await self._exists(domain):
            return rec.nonexistent_policy
        return rec.subdomain_policy

    async def _exists(self, domain: str) -> bool:
        """RFC 9091 2.6: a domain exists unless A, AAAA and MX all give NXDOMAIN or
        NODATA. Lookups that fail temporarily count as existing (``sp`` applies)."""
        answers = await asyncio.gather(
            *(self.resolver.resolve(domain, t) for t in ("A", "AAAA", "MX")),
            return_exceptions=True,
        )
        for ans in answers:
            if isinstance(ans, NoSuchDomain):
                return False
            if isinstance(ans, BaseException) or ans:
                return True
        return False


def _severity(r: DmarcResult) -> tuple[int, int]:
    rank = {FAIL: 4, TEMPERROR: 3, PERMERROR: 2, PASS: 1, NONE: 0}[r.result]
    return rank, _STRICTNESS.get(r.policy, 0)


def enforcement_verdict(result: DmarcResult, mode: str = "enforce") -> Verdict:
    """The pipeline verdict for a DMARC result: in ``enforce`` mode a ``reject``
    disposition is a 550 5.7.1 and ``quarantine`` holds the message; ``monitor``
    always accepts."""
    if mode != "enforce":
        return Verdict(action=ACCEPT)
    if result.result == FAIL and result.disposition == "reject":
        return Verdict(
            action=REJECT,
            code=550,
            enhanced="5.7.1",
            reason=f"DMARC policy of {result.domain} rejects this message",
        )
    if result.result == FAIL and result.disposition == "quarantine":
        return Verdict(action=HOLD)
    return Verdict(action=ACCEPT)


def auth_results_fragment(result: DmarcResult) -> str:
    """``dmarc=<result> (p=<policy> dis=<disposition>) header.from=<domain>``."""
    domain = result.domain or "none"
    return (
        f"dmarc={result.result} (p={result.policy} dis={result.disposition}) header.from={domain}"
    )
