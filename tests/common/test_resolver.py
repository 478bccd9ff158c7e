"""The shared resolver, against a real DNS server on loopback."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator

import pytest

from elemta.common.config import DnsSettings
from elemta.common.resolver import (
    MxHost,
    NoSuchDomain,
    NullMx,
    PermanentDnsError,
    Resolver,
    TemporaryDnsError,
)

from support.dnsserver import DnsServer, free_port


def resolver_for(port: int, timeout: float = 2.0) -> Resolver:
    return Resolver(DnsSettings(nameservers=["127.0.0.1"], port=port, timeout=timeout))


@pytest.fixture
def resolver(dns_server: DnsServer) -> Resolver:
    return resolver_for(dns_server.port)


@pytest.fixture
def silent_nameserver() -> Iterator[int]:
    """A UDP port that takes queries and never answers."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    yield sock.getsockname()[1]
    sock.close()


async def test_mx_hosts_come_sorted_by_preference(
    dns_server: DnsServer, resolver: Resolver
) -> None:
    dns_server.add_zone(
        "example.test.",
        "@ 300 IN MX 20 mx2\n@ 300 IN MX 10 mx1\n@ 300 IN MX 30 mx3.other.test.\n",
    )
    assert await resolver.mx("example.test") == [
        MxHost(10, "mx1.example.test"),
        MxHost(20, "mx2.example.test"),
        MxHost(30, "mx3.other.test"),
    ]


async def test_mx_hosts_of_equal_preference_are_shuffled(dns_server: DnsServer) -> None:
    zone = "".join(f"@ 300 IN MX 10 mx{i}\n" for i in range(6)) + "@ 300 IN MX 5 first\n"
    dns_server.add_zone("example.test.", zone)
    orders = set()
    for _ in range(20):
        hosts = await resolver_for(dns_server.port).mx("example.test")  # fresh cache each time
        assert hosts[0] == MxHost(5, "first.example.test")
        orders.add(tuple(h.host for h in hosts[1:]))
    assert len(orders) > 1
    assert all(sorted(o) == [f"mx{i}.example.test" for i in range(6)] for o in orders)


async def test_answers_are_cached_until_their_ttl_expires(
    dns_server: DnsServer, resolver: Resolver
) -> None:
    dns_server.add("example.test", "MX", "10 old.example.test.", ttl=1)
    assert await resolver.mx("example.test") == [MxHost(10, "old.example.test")]
    queries = dns_server.queries
    dns_server.clear()
    dns_server.add("example.test", "MX", "10 new.example.test.", ttl=1)
    assert await resolver.mx("example.test") == [MxHost(10, "old.example.test")]
    assert dns_server.queries == queries  # answered from the cache
    await asyncio.sleep(1.2)
    assert await resolver.mx("example.test") == [MxHost(10, "new.example.test")]


async def test_concurrent_identical_lookups_share_one_query(
    dns_server: DnsServer, resolver: Resolver
) -> None:
    dns_server.add("example.test", "MX", "10 mx.example.test.")
    results = await asyncio.gather(*(resolver.mx("example.test") for _ in range(10)))
    assert all(r == [MxHost(10, "mx.example.test")] for r in results)
    assert dns_server.queries == 1


async def test_null_mx_is_a_permanent_error_with_status_5_1_10(
    dns_server: DnsServer, resolver: Resolver
) -> None:
    dns_server.add("nomail.test", "MX", "0 .")
    dns_server.add("nomail.test", "A", "192.0.2.1")
    with pytest.raises(NullMx) as info:
        await resolver.mx("nomail.test")
    err = info.value
    assert isinstance(err, PermanentDnsError)
    assert (err.code, err.enhanced) == (556, "5.1.10")
    assert str(err) == "556 5.1.10 nomail.test does not accept mail (null MX)"


async def test_domain_without_mx_falls_back_to_its_own_address(
    dns_server: DnsServer, resolver: Resolver
) -> None:
    dns_server.add("plain.test", "A", "192.0.2.7")
    assert await resolver.mx("plain.test") == [MxHost(0, "plain.test")]


async def test_domain_without_mx_or_address_is_a_permanent_error(
    dns_server: DnsServer, resolver: Resolver
) -> None:
    dns_server.add("textonly.test", "TXT", '"v=spf1 -all"')
    with pytest.raises(PermanentDnsError) as info:
        await resolver.mx("textonly.test")
    assert info.value.enhanced == "5.1.2"


async def test_nonexistent_domain_is_a_permanent_error(
    dns_server: DnsServer, resolver: Resolver
) -> None:
    dns_server.add("exists.test", "A", "192.0.2.1")
    with pytest.raises(NoSuchDomain) as info:
        await resolver.mx("missing.test")
    assert isinstance(info.value, PermanentDnsError)
    assert (info.value.code, info.value.enhanced) == (550, "5.1.2")


async def test_dead_nameserver_is_a_temporary_error() -> None:
    started = time.monotonic()
    with pytest.raises(TemporaryDnsError) as info:
        await resolver_for(free_port(), timeout=0.5).mx("example.test")
    assert (info.value.code, info.value.enhanced) == (451, "4.4.3")
    assert time.monotonic() - started < 2.0


async def test_silent_nameserver_times_out_as_a_temporary_error(silent_nameserver: int) -> None:
    started = time.monotonic()
    with pytest.raises(TemporaryDnsError) as info:
        await resolver_for(silent_nameserver, timeout=0.5).mx("example.test")
    assert info.value.enhanced == "4.4.3"
    assert "timed out" in info.value.text
    assert time.monotonic() - started < 2.0


async def test_addresses_list_ipv4_before_ipv6(dns_server: DnsServer, resolver: Resolver) -> None:
    dns_server.add("host.test", "AAAA", "2001:db8::1")
    dns_server.add("host.test", "A", "192.0.2.1")
    assert await resolver.addresses("host.test") == ["192.0.2.1", "2001:db8::1"]


async def test_address_literals_need_no_lookup(dns_server: DnsServer, resolver: Resolver) -> None:
    assert await resolver.addresses("[127.0.0.1]") == ["127.0.0.1"]
    assert await resolver.addresses("[IPv6:::1]") == ["::1"]
    assert dns_server.queries == 0


async def test_host_without_address_is_a_permanent_error(
    dns_server: DnsServer, resolver: Resolver
) -> None:
    dns_server.add("noaddr.test", "TXT", '"hello"')
    with pytest.raises(PermanentDnsError) as info:
        await resolver.addresses("noaddr.test")
    assert info.value.enhanced == "5.4.4"


async def test_generic_lookups_return_records_or_nothing(
    dns_server: DnsServer, resolver: Resolver
) -> None:
    dns_server.add("example.test", "TXT", '"v=spf1 " "ip4:192.0.2.0/24 -all"')
    assert await resolver.txt("example.test") == ["v=spf1 ip4:192.0.2.0/24 -all"]
    assert await resolver.resolve("example.test", "A") == []
    with pytest.raises(NoSuchDomain):
        await resolver.resolve("nowhere.example.test.invalid", "TXT")


async def test_lookups_from_worker_threads_share_the_cache_and_the_errors(
    dns_server: DnsServer, resolver: Resolver
) -> None:
    """pyspf and dkimpy look up in a thread; what they found serves the async checks."""
    dns_server.add("s1._domainkey.example.org", "TXT", '"v=DKIM1; p=abc"')
    records = await asyncio.to_thread(resolver.resolve_blocking, "s1._domainkey.example.org", "TXT")
    assert [b"".join(r.strings) for r in records] == [b"v=DKIM1; p=abc"]  # type: ignore[attr-defined]
    assert await resolver.txt("s1._domainkey.example.org") == ["v=DKIM1; p=abc"]
    assert dns_server.queries == 1  # the second answer came from the shared cache
    with pytest.raises(NoSuchDomain):
        await asyncio.to_thread(resolver.resolve_blocking, "nowhere.example.org", "TXT")
