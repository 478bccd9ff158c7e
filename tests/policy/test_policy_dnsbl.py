"""DNSBL checks against a real DNS server on loopback."""

from __future__ import annotations

import time

import pytest

from elemta.common.config import DnsSettings
from elemta.common.resolver import Resolver
from elemta.policy.dnsbl import Dnsbl, reversed_name

from support.dnsserver import DnsServer, free_port

ZONES = ["bl.example", "zen.example"]


def dnsbl(port: int, timeout: float = 2.0, **kw: object) -> Dnsbl:
    resolver = Resolver(
        DnsSettings(nameservers=["127.0.0.1"], port=port, timeout=timeout, cache_size=0)
    )
    kw.setdefault("ip_zones", ZONES)
    kw.setdefault("domain_zones", ["dbl.example"])
    kw.setdefault("trusted_networks", ["10.0.0.0/8"])
    return Dnsbl(resolver, **kw)  # type: ignore[arg-type]


async def test_a_listed_ip_is_rejected_with_554_5_7_1_naming_the_zone(
    dns_server: DnsServer,
) -> None:
    dns_server.add("4.3.2.1.zen.example", "A", "127.0.0.2")
    v = await dnsbl(dns_server.port).connect({"client_ip": "1.2.3.4"})
    assert v is not None
    assert (v.action, v.code, v.enhanced) == ("reject", 554, "5.7.1")
    assert v.reason == "Service unavailable; client [1.2.3.4] blocked using zen.example"


async def test_an_unlisted_ip_gets_no_verdict(dns_server: DnsServer) -> None:
    dns_server.add("4.3.2.1.zen.example", "A", "127.0.0.2")
    assert (await dnsbl(dns_server.port).connect({"client_ip": "5.6.7.8"})) is None


async def test_an_answer_outside_127_slash_8_or_an_error_code_is_no_listing(
    dns_server: DnsServer,
) -> None:
    dns_server.add("8.7.6.5.bl.example", "A", "192.0.2.1")
    dns_server.add("8.7.6.5.zen.example", "A", "127.255.255.254")
    assert (await dnsbl(dns_server.port).connect({"client_ip": "5.6.7.8"})) is None


async def test_an_ipv6_client_is_looked_up_by_reversed_nibbles(dns_server: DnsServer) -> None:
    ip = "2001:db8::1"
    name = "1.0.0.0." + "0." * 20 + "8.b.d.0.1.0.0.2"
    assert reversed_name(ip) == name
    dns_server.add(f"{name}.bl.example", "A", "127.0.0.10")
    v = await dnsbl(dns_server.port).connect({"client_ip": ip})
    assert v is not None and v.reason.endswith(f"client [{ip}] blocked using bl.example")


async def test_a_listed_sender_domain_is_rejected_at_mail(dns_server: DnsServer) -> None:
    dns_server.add("spam.example.dbl.example", "A", "127.0.1.2")
    check = dnsbl(dns_server.port)
    v = await check.mail({"client_ip": "192.0.2.1"}, "Someone@Spam.Example")
    assert v is not None and (v.code, v.enhanced) == (554, "5.7.1")
    assert "spam.example" in v.reason and "dbl.example" in v.reason
    assert (await check.mail({"client_ip": "192.0.2.1"}, "a@ham.example")) is None
    assert (await check.mail({"client_ip": "192.0.2.1"}, "")) is None


async def test_a_trusted_client_is_not_checked(dns_server: DnsServer) -> None:
    dns_server.add("3.2.1.10.zen.example", "A", "127.0.0.2")
    assert (await dnsbl(dns_server.port).connect({"client_ip": "10.1.2.3"})) is None
    assert dns_server.queries == 0


async def test_a_dead_dns_server_means_not_listed_and_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    check = dnsbl(free_port(), timeout=0.5, ip_zones=["a.example", "b.example", "c.example"])
    started = time.monotonic()
    assert (await check.connect({"client_ip": "1.2.3.4"})) is None
    assert time.monotonic() - started < 1.2  # concurrently: one timeout, not three
    assert (await check.mail({}, "a@example.org")) is None
    assert "DNSBL lookup" in caplog.text
