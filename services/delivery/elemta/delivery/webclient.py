"""HTTPS clients of delivery (MTA-STS policy fetches, TLS-RPT posts) on aiohttp.

Names are looked up through Elemta's own resolver (:class:`AiohttpResolver`),
so the ``[dns]`` settings and their cache apply to web hosts as to MX hosts,
and certificates are checked against the given TLS context.
"""

from __future__ import annotations

import socket
import ssl

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from elemta.common.resolver import DnsError, Resolver

__all__ = ["AiohttpResolver", "https_session"]


class AiohttpResolver(AbstractResolver):
    """aiohttp looks up the policy host through Elemta's own resolver."""

    def __init__(self, resolver: Resolver) -> None:
        self.resolver = resolver

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        try:
            addresses = await self.resolver.addresses(host)
        except DnsError as exc:
            raise OSError(f"cannot resolve {host}: {exc.text}") from None
        return [
            ResolveResult(
                hostname=host,
                host=a,
                port=port,
                family=socket.AF_INET6 if ":" in a else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for a in addresses
        ]

    async def close(self) -> None:
        return None


def https_session(resolver: Resolver, context: ssl.SSLContext, agent: str) -> aiohttp.ClientSession:
    """A client session resolving through ``resolver`` and verifying with ``context``."""
    connector = aiohttp.TCPConnector(
        resolver=AiohttpResolver(resolver), ssl=context, limit_per_host=2
    )
    return aiohttp.ClientSession(connector=connector, headers={"User-Agent": agent})
