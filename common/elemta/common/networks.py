"""Membership of a client address in configured networks (``server.trusted_networks``).

One implementation for every service that asks "is this client ours?": ingress
for relay control, policy for skipping checks of our own outbound mail.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

__all__ = ["Networks"]


# Answers remembered per address: a client is asked about several times a
# session (relay control, policy, client limits), and parsing the address is
# most of the cost. Forgotten all at once when this many are known.
_REMEMBERED = 4096


class Networks:
    def __init__(self, networks: Iterable[str]) -> None:
        self.networks = [ipaddress.ip_network(n.strip(), strict=False) for n in networks]
        self._known: dict[str, bool] = {}

    def __contains__(self, address: object) -> bool:
        """True for an address inside any network; False for anything unparseable.

        A zone id (``fe80::1%eth0``) is ignored and an IPv4-mapped IPv6 address
        counts as the IPv4 address it carries.
        """
        key = str(address)
        known = self._known.get(key)
        if known is None:
            if len(self._known) >= _REMEMBERED:
                self._known.clear()
            known = self._known[key] = self._contains(key)
        return known

    def _contains(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(str(address).split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in net for net in self.networks)
