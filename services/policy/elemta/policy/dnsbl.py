"""DNS block lists: the client IP at connect, the sender's domain at MAIL FROM.

An IP is looked up reversed under each IP zone (``4.3.2.1.zen.example`` for
1.2.3.4, the 32 nibbles reversed for IPv6, RFC 5782); the sender's domain is
looked up under each domain zone (``example.com.dbl.example``). An A record in
127.0.0.0/8 means listed and the client gets ``554 5.7.1``, except the
127.255.255.x codes by which some lists report a refused query
(:data:`ERROR_CODES`); those are logged, not listings.

NXDOMAIN means not listed; so does a lookup that fails (timeout, SERVFAIL),
which is logged: a list that cannot be reached must not stop all mail.
All zones are queried concurrently. Trusted clients are not checked.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Iterable
from typing import Any

from elemta.common.networks import Networks
from elemta.common.resolver import DnsError, NoSuchDomain, Resolver

from .checks import REJECT, Verdict

__all__ = ["Dnsbl", "reversed_name"]

log = logging.getLogger(__name__)

# Spamhaus-style answers that report an error (query refused, over quota, open
# resolver used), not a listing.
ERROR_CODES = frozenset({"127.255.255.252", "127.255.255.254", "127.255.255.255"})
LISTED = ipaddress.ip_network("127.0.0.0/8")


def reversed_name(ip: str) -> str:
    """The RFC 5782 query label of ``ip``: octets or nibbles, reversed."""
    addr = ipaddress.ip_address(ip)
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    if addr.version == 4:
        return ".".join(reversed(str(addr).split(".")))
    return ".".join(reversed(addr.exploded.replace(":", "")))


def _domain(address: str) -> str:
    return address.rpartition("@")[2].strip().strip("<>").lower().rstrip(".")


class Dnsbl:
    def __init__(
        self,
        resolver: Resolver,
        ip_zones: Iterable[str] = (),
        domain_zones: Iterable[str] = (),
        trusted_networks: Iterable[str] = ("127.0.0.0/8", "::1/128"),
    ) -> None:
        self.resolver = resolver
        self.ip_zones = [z.strip().lower().rstrip(".") for z in ip_zones if z.strip()]
        self.domain_zones = [z.strip().lower().rstrip(".") for z in domain_zones if z.strip()]
        self.trusted = Networks(trusted_networks)

    def _is_trusted(self, ip: str) -> bool:
        return ip in self.trusted

    async def connect(self, session: dict[str, Any]) -> Verdict | None:
        ip = str(session.get("client_ip", ""))
        if not self.ip_zones or self._is_trusted(ip):
            return None
        try:
            label = reversed_name(ip)
        except ValueError:
            return None
        zone = await self._first_listed(label, self.ip_zones)
        if zone is None:
            return None
        return Verdict(
            action=REJECT,
            code=554,
            enhanced="5.7.1",
            reason=f"Service unavailable; client [{ip}] blocked using {zone}",
        )

    async def mail(self, session: dict[str, Any], sender: str) -> Verdict | None:
        domain = _domain(sender) if "@" in sender else ""
        if not self.domain_zones or not domain:
            return None
        if self._is_trusted(str(session.get("client_ip", ""))):
            return None
        zone = await self._first_listed(domain, self.domain_zones)
        if zone is None:
            return None
        return Verdict(
            action=REJECT,
            code=554,
            enhanced="5.7.1",
            reason=f"Service unavailable; sender domain {domain} blocked using {zone}",
        )

    async def _first_listed(self, label: str, zones: list[str]) -> str | None:
        """The first zone (in configured order) that lists ``label``."""
        results = await asyncio.gather(*(self._listed(f"{label}.{z}") for z in zones))
        for zone, listed in zip(zones, results, strict=True):
            if listed:
                return zone
        return None

    async def _listed(self, name: str) -> bool:
        try:
            records = await self.resolver.resolve(name, "A")
        except NoSuchDomain:
            return False
        except DnsError as exc:  # fail open: an unreachable list blocks nothing
            log.warning("DNSBL lookup %s failed, not listed: %s", name, exc)
            return False
        for record in records:
            text = record.to_text()
            if text in ERROR_CODES:
                log.warning("DNSBL lookup %s answered error code %s", name, text)
                continue
            try:
                if ipaddress.ip_address(text) in LISTED:
                    return True
            except ValueError:
                continue
        return False
