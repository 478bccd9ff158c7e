"""Client identity: the client's name by forward-confirmed reverse DNS (FCrDNS).

The PTR names of the client's address are looked up, and a name counts only when
its own A/AAAA records lead back to the address (a PTR record alone is whatever
the address's owner wrote). The first confirmed name goes into ``Received:`` and
to policy (``Session.client_hostname``, for a check like Postfix's
``reject_unknown_client_hostname``); otherwise the name is ``unknown``, as in
Postfix. Lookups go through the process's one resolver and its cache, start when
the connection is accepted and are awaited only when the name is needed (at MAIL
for policy, at the end of DATA for ``Received:``), within
``ingress.client_name_timeout``. Loopback clients are not looked up.
"""

from __future__ import annotations

import ipaddress

import dns.reversename

from elemta.common.resolver import DnsError, Resolver

__all__ = ["UNKNOWN", "confirmed_name"]

UNKNOWN = "unknown"
MAX_NAMES = 3  # PTR names tried, at most


async def confirmed_name(resolver: Resolver, ip: str) -> str:
    """The client's forward-confirmed name, or ``unknown``."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return UNKNOWN
    if addr.is_loopback:
        return UNKNOWN  # no lookup for our own host's connections
    try:
        records = await resolver.resolve(dns.reversename.from_address(ip).to_text(), "PTR")
    except (TimeoutError, DnsError):
        return UNKNOWN
    for record in records[:MAX_NAMES]:
        name = record.target.to_text().rstrip(".").lower()  # type: ignore[attr-defined]
        try:
            found = await resolver.addresses(name)
        except DnsError:
            continue
        if any(ipaddress.ip_address(a) == addr for a in found):
            return name
    return UNKNOWN
