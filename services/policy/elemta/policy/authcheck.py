"""Authentication at end of DATA: SPF, DKIM, ARC and DMARC in, DKIM signatures out.

Mail from ``server.trusted_networks`` or from a user authenticated with SMTP AUTH
is our own outbound mail: it is signed with
the keys of its From domain (``policy.dkim_keys``) and not checked. Everything
else is checked: SPF for the client and MAIL FROM (or HELO for a bounce), every
DKIM signature, the ARC chain, then DMARC over the aligned results. The verdict
carries one ``Authentication-Results`` field (RFC 8601) under our authserv-id,
a ``Received-SPF`` field, and asks ingress to drop fields that claim our
authserv-id already (forgeries, RFC 8601 5). DMARC decides the action: in
``enforce`` mode ``p=reject`` answers ``550 5.7.1`` and ``p=quarantine`` holds.

The three checks run concurrently; each never raises (a lookup that fails is a
``temperror`` result), so a DNS outage degrades to headers, not to a crash.
"""

from __future__ import annotations

import asyncio
import logging
from email.parser import BytesHeaderParser
from email.policy import compat32
from typing import Any

from elemta.common.config import Config
from elemta.common.networks import Networks
from elemta.common.resolver import Resolver

from .arc import ArcResult, ArcSealer, ArcSealError, ArcVerifier
from .checks import ACCEPT, Verdict
from .dkimcheck import DkimResult, DkimSigner, DkimVerifier, SigningKey
from .dmarc import DmarcEvaluator, DmarcResult, auth_results_fragment, enforcement_verdict
from .dmarcrecord import from_domains
from .spf import SpfChecker, SpfResult

__all__ = ["Authentication"]

log = logging.getLogger(__name__)


def _domain(address: str) -> str:
    return address.rpartition("@")[2].strip().lower().rstrip(".")


class Authentication:
    def __init__(self, cfg: Config, resolver: Resolver | None = None) -> None:
        settings = cfg.policy
        self.authserv_id = settings.authserv_id or cfg.server.hostname
        self.trusted = Networks(cfg.server.trusted_networks)
        dns = resolver or Resolver(cfg.dns)  # one resolver, one cache, for every check
        self.spf = SpfChecker(dns) if settings.spf else None
        self.dkim = DkimVerifier(dns) if settings.dkim_verify else None
        self.arc = ArcVerifier(dns) if settings.arc_verify else None
        self.dmarc = DmarcEvaluator(dns) if settings.dmarc != "off" else None
        self.dmarc_mode = settings.dmarc
        self.relay_domains = set(cfg.server.relay_domains)
        self.sealer = (
            ArcSealer.from_file(
                self.authserv_id,
                settings.arc_seal_domain,
                settings.arc_seal_selector,
                settings.arc_seal_key_file,
            )
            if settings.arc_seal_domain
            else None
        )
        self.signer = (
            DkimSigner(
                [
                    SigningKey.from_file(k.domain, k.selector, k.algorithm, k.key_file)
                    for k in settings.dkim_keys
                ]
            )
            if settings.dkim_keys
            else None
        )

    def is_trusted(self, ip: str) -> bool:
        return ip in self.trusted

    async def data(
        self, session: dict[str, Any], sender: str, recipients: list[str], message: bytes
    ) -> Verdict | None:
        # Our own outbound mail: from trusted networks or an authenticated user.
        if session.get("user") or self.is_trusted(str(session.get("client_ip", ""))):
            return self._sign(message, sender)
        return await self._check(session, sender, recipients, message)

    # -- outbound -----------------------------------------------------------------

    def _sign(self, message: bytes, sender: str) -> Verdict | None:
        if self.signer is None:
            return None
        author = from_domains(_headers(message))
        domain = author.domain or _domain(sender)
        if not domain or domain not in self.signer.domains():
            return None
        try:
            lines = self.signer.sign(message, domain)
        except Exception as exc:  # a broken message is still delivered, unsigned
            log.warning("DKIM signing for %s failed: %s", domain, exc)
            return None
        headers = []
        for line in lines:
            name, _, value = line.decode("ascii", "replace").partition(":")
            headers.append((name, value.strip()))
        return Verdict(action=ACCEPT, add_headers=headers)

    # -- inbound ------------------------------------------------------------------

    async def _check(
        self, session: dict[str, Any], sender: str, recipients: list[str], message: bytes
    ) -> Verdict:
        ip = str(session.get("client_ip", ""))
        helo = str(session.get("helo", ""))
        spf_task = self.spf.check(ip, sender, helo) if self.spf else _none(None)
        dkim_task = self.dkim.verify(message) if self.dkim else _none([])
        arc_task = self.arc.verify(message) if self.arc else _none(None)
        spf, dkim_results, arc = await asyncio.gather(spf_task, dkim_task, arc_task)
        dmarc: DmarcResult | None = None
        if self.dmarc is not None:
            dmarc = await self.dmarc.evaluate_author(
                from_domains(_headers(message)),
                spf.result if spf else "none",
                spf.domain if spf else "",
                [(r.result, r.domain) for r in dkim_results],
            )
        verdict = enforcement_verdict(dmarc, self.dmarc_mode) if dmarc else Verdict()
        results = self._results(spf, dkim_results, arc, dmarc, sender, helo)
        verdict.add_headers = [("Authentication-Results", results)]
        if spf is not None:
            verdict.add_headers.append(spf.received_spf_header(self.authserv_id))
        verdict.remove_headers = [f"Authentication-Results:{self.authserv_id}"]
        if verdict.action == ACCEPT and self._forwarded(recipients):
            verdict.add_headers.extend(self._seal(message, results))
        return verdict

    def _forwarded(self, recipients: list[str]) -> bool:
        return self.sealer is not None and any(_domain(r) in self.relay_domains for r in recipients)

    def _seal(self, message: bytes, results: str) -> list[tuple[str, str]]:
        """The next ARC set over the message as it leaves, with our results."""
        assert self.sealer is not None
        try:
            lines = self.sealer.seal(message, " ".join(results.split()))
        except ArcSealError as exc:
            log.warning("ARC sealing failed: %s", exc)
            return []
        out = []
        for line in lines:
            name, _, value = line.decode("ascii", "replace").partition(":")
            out.append((name, value.strip()))
        return out

    def _results(
        self,
        spf: SpfResult | None,
        dkim_results: list[DkimResult],
        arc: ArcResult | None,
        dmarc: DmarcResult | None,
        sender: str,
        helo: str,
    ) -> str:
        parts = [self.authserv_id]
        if spf is not None:
            identity = f"smtp.mailfrom={sender}" if sender else f"smtp.helo={helo}"
            parts.append(f"spf={spf.result} {identity}")
        parts.extend(r.authres() for r in dkim_results)
        if arc is not None:
            parts.append(f"arc={arc.cv}")
        if dmarc is not None:
            parts.append(auth_results_fragment(dmarc))
        if len(parts) == 1:
            parts.append("none")
        return ";\r\n\t".join(parts)


async def _none(value: Any) -> Any:
    return value


def _headers(message: bytes) -> list[tuple[str, str]]:
    end = message.find(b"\r\n\r\n")
    head = message if end < 0 else message[: end + 2]
    parsed = BytesHeaderParser(policy=compat32).parsebytes(head)
    return [(k, str(v)) for k, v in parsed.items()]
