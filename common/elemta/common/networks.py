"""Membership of a client address in configured networks (``server.trusted_networks``).

One implementation for every service that asks "is this client ours?": ingress
for relay control, policy for skipping checks of our own outbound mail.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

__all__ = ["Networks"]


class Networks:
    def __init__(self, networks: Iterable[str]) -> None:
        self.networks = [ipaddress.ip_network(n.strip(), strict=False) for n in networks]

    def __contains__(self, address: object) -> bool:
        """True for an address inside any network; False for anything unparseable.

        A zone id (``fe80::1%eth0``) is ignored and an IPv4-mapped IPv6 address
        counts as the IPv4 address it carries.
        """
        try:
            ip = ipaddress.ip_address(str(address).split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in net for net in self.networks)
