"""TLS levels and MTA-STS in delivery, against real peers on loopback.

The peers are aiosmtpd sinks offering STARTTLS with certificates from a test CA
(trustme); policies come over HTTPS from the test policy host; every name is
served by the test DNS server. A job is published as the queue would, and the
outcome read back from JetStream.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import trustme
from delivery_harness import Harness, metric

from support.dnsserver import DnsServer
from support.policyhost import PolicyHost
from support.smtpsink import SmtpSink

ENFORCE = "version: STSv1\nmode: enforce\nmx: mx.sts.test\nmax_age: 86400\n"
TESTING = "version: STSv1\nmode: testing\nmx: mx.sts.test\nmax_age: 86400\n"


class Peer:
    """A sink whose certificate can be swapped between attempts."""

    def __init__(self, ca: trustme.CA) -> None:
        self.ca = ca
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.present("mx.sts.test")
        self.sink = SmtpSink(tls_context=self.context).start()

    def present(self, name: str) -> None:
        self.ca.issue_cert(name).configure_cert(self.context)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


@pytest.fixture
def peer(ca: trustme.CA) -> Iterator[Peer]:
    p = Peer(ca)
    yield p
    p.sink.stop()


@pytest.fixture
async def policy_host(ca: trustme.CA) -> AsyncIterator[PolicyHost]:
    host = PolicyHost(ca)
    await host.start()
    yield host
    await host.stop()


def publish(dns: DnsServer, host: PolicyHost, domain: str = "sts.test", policy: str = ENFORCE):
    dns.add(domain, "MX", f"10 mx.{domain}.")
    dns.add(f"mx.{domain}", "A", "127.0.0.1")
    if policy:
        dns.add(f"_mta-sts.{domain}", "TXT", '"v=STSv1; id=1"')
        dns.add(f"mta-sts.{domain}", "A", "127.0.0.1")
        host.serve(domain, body=policy)


def settings(peer: Peer, ca_file: str, host: PolicyHost, **more: object) -> dict[str, object]:
    return {
        "smtp_port": peer.sink.port,
        "tls_ca_file": ca_file,
        "mta_sts_port": host.port,
        **more,
    }


async def test_mta_sts_enforce_defers_when_the_mx_shows_a_certificate_for_another_name(
    harness: Harness, dns_server: DnsServer, policy_host: PolicyHost, peer: Peer, ca_file: str
) -> None:
    publish(dns_server, policy_host)
    peer.present("someone-else.test")
    await harness.start(**settings(peer, ca_file, policy_host))

    qid = await harness.submit("mx", ["bob@sts.test"])
    [result] = (await harness.outcome(qid)).results
    assert (result.status, result.code, result.enhanced) == ("deferred", 451, "4.7.5")
    assert "not valid for mx.sts.test" in result.text
    assert peer.sink.messages == []  # not delivered in clear either

    peer.present("mx.sts.test")
    qid = await harness.submit("mx", ["bob@sts.test"], attempt=2)
    [result] = (await harness.outcome(qid)).results
    assert result.status == "delivered", result.text
    [received] = peer.sink.wait_for(1)
    assert received.tls and received.rcpt_tos == ["bob@sts.test"]
    assert metric("elemta_delivery_tls_sessions_total", {"policy": "sts", "outcome": "failed"}) >= 1


async def test_mta_sts_enforce_refuses_mx_hosts_the_policy_does_not_list(
    harness: Harness, dns_server: DnsServer, policy_host: PolicyHost, peer: Peer, ca_file: str
) -> None:
    publish(dns_server, policy_host, policy=ENFORCE.replace("mx.sts.test", "mx2.sts.test"))
    await harness.start(**settings(peer, ca_file, policy_host))

    qid = await harness.submit("mx", ["bob@sts.test"])
    [result] = (await harness.outcome(qid)).results
    assert (result.status, result.enhanced) == ("deferred", "4.7.5")
    assert "allows none of its MX hosts" in result.text
    assert peer.sink.messages == []


async def test_mta_sts_testing_delivers_despite_a_bad_certificate(
    harness: Harness, dns_server: DnsServer, policy_host: PolicyHost, peer: Peer, ca_file: str
) -> None:
    publish(dns_server, policy_host, policy=TESTING)
    peer.present("someone-else.test")
    await harness.start(**settings(peer, ca_file, policy_host))

    qid = await harness.submit("mx", ["bob@sts.test"])
    assert (await harness.outcome(qid)).results[0].status == "delivered"
    assert peer.sink.wait_for(1)[0].tls


async def test_without_a_policy_tls_stays_opportunistic(
    harness: Harness, dns_server: DnsServer, policy_host: PolicyHost, peer: Peer, ca_file: str
) -> None:
    publish(dns_server, policy_host, policy="")
    peer.present("someone-else.test")
    await harness.start(**settings(peer, ca_file, policy_host))

    qid = await harness.submit("mx", ["bob@sts.test"])
    assert (await harness.outcome(qid)).results[0].status == "delivered"
    assert peer.sink.wait_for(1)[0].tls


async def test_level_verify_for_a_domain_checks_the_mx_certificate(
    harness: Harness, dns_server: DnsServer, policy_host: PolicyHost, peer: Peer, ca_file: str
) -> None:
    publish(dns_server, policy_host, policy="")
    publish(dns_server, policy_host, domain="other.test", policy="")
    peer.present("mx.sts.test")
    await harness.start(**settings(peer, ca_file, policy_host, tls_policy={".test": "verify"}))

    good = await harness.submit("mx", ["bob@sts.test"])
    bad = await harness.submit("mx", ["carol@other.test"])
    assert (await harness.outcome(good)).results[0].status == "delivered"
    [result] = (await harness.outcome(bad)).results
    assert (result.status, result.enhanced) == ("deferred", "4.7.5")
    assert "not valid for mx.other.test" in result.text
    assert [m.rcpt_tos for m in peer.sink.wait_for(1)] == [["bob@sts.test"]]


async def test_level_encrypt_defers_when_the_peer_offers_no_starttls(
    harness: Harness, dns_server: DnsServer, sink: SmtpSink
) -> None:
    dns_server.add("plain.test", "MX", "10 mx.plain.test.")
    dns_server.add("mx.plain.test", "A", "127.0.0.1")
    await harness.start(smtp_port=sink.port, tls_security_level="encrypt")

    qid = await harness.submit("mx", ["bob@plain.test"])
    [result] = (await harness.outcome(qid)).results
    assert (result.status, result.code, result.enhanced) == ("deferred", 451, "4.7.4")
    assert "TLS is required, but was not offered" in result.text
    assert sink.messages == []


async def test_level_none_sends_in_clear_even_when_tls_is_offered(
    harness: Harness, dns_server: DnsServer, peer: Peer
) -> None:
    dns_server.add("clear.test", "MX", "10 mx.clear.test.")
    dns_server.add("mx.clear.test", "A", "127.0.0.1")
    await harness.start(smtp_port=peer.sink.port, tls_policy={"clear.test": "none"})

    qid = await harness.submit("mx", ["bob@clear.test"])
    assert (await harness.outcome(qid)).results[0].status == "delivered"
    assert not peer.sink.wait_for(1)[0].tls


async def test_a_testing_policy_does_not_lower_a_level_that_requires_tls(
    harness: Harness, dns_server: DnsServer, policy_host: PolicyHost, sink: SmtpSink, ca_file: str
) -> None:
    publish(dns_server, policy_host, policy=TESTING)
    await harness.start(
        smtp_port=sink.port,
        tls_ca_file=ca_file,
        mta_sts_port=policy_host.port,
        tls_policy={"sts.test": "encrypt"},
    )

    qid = await harness.submit("mx", ["bob@sts.test"])
    [result] = (await harness.outcome(qid)).results
    assert (result.status, result.enhanced) == ("deferred", "4.7.4")
    assert sink.messages == []
