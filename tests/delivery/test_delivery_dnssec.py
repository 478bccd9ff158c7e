"""DANE in delivery, with DNSSEC answers from a real validating resolver.

The zone ``dane.test`` is signed (dnspython) and served by the test DNS server;
a private ``unbound`` validates it with the zone's key as trust anchor and
treats the rest of ``test.`` as unsigned. Delivery asks unbound
(``dns.dnssec = true``) at level ``dane``. One aiosmtpd sink with STARTTLS plays
every MX host; its certificate comes from an intermediate CA of a test CA.
"""

from __future__ import annotations

import hashlib
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from delivery_harness import Harness

from elemta.delivery.dane import spki_der

from support.dnssec import SignedZone, Unbound
from support.dnsserver import DnsServer
from support.smtpsink import SmtpSink

WRONG = "00" * 32


def _der(pem: bytes) -> bytes:
    return x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)


class World:
    """The sinks, the signed zone, the DNS server and unbound of one module."""

    def __init__(self, tmp: Path) -> None:
        root = trustme.CA()
        self.issuer = root.create_child_ca()
        leaf = self.issuer.issue_cert("mx-good.dane.test", "mx-ta.dane.test")
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        leaf.configure_cert(context)
        self.sink = SmtpSink(tls_context=context).start()
        self.plain = SmtpSink().start()  # offers no STARTTLS
        ee = hashlib.sha256(spki_der(_der(leaf.cert_chain_pems[0].bytes()))).hexdigest()
        ta = hashlib.sha256(_der(self.issuer.cert_pem.bytes())).hexdigest()
        p, q = self.sink.port, self.plain.port
        self.zone = SignedZone(
            "dane.test.",
            f"""
good 300 IN MX 10 mx-good
mx-good 300 IN A 127.0.0.1
_{p}._tcp.mx-good 300 IN TLSA 3 1 1 {ee}
bad 300 IN MX 10 mx-bad
mx-bad 300 IN A 127.0.0.1
_{p}._tcp.mx-bad 300 IN TLSA 3 1 1 {WRONG}
ta 300 IN MX 10 mx-ta
mx-ta 300 IN A 127.0.0.1
_{p}._tcp.mx-ta 300 IN TLSA 2 0 1 {ta}
ta-other 300 IN MX 10 mx-ta-other
mx-ta-other 300 IN A 127.0.0.1
_{p}._tcp.mx-ta-other 300 IN TLSA 2 0 1 {ta}
unusable 300 IN MX 10 mx-unusable
mx-unusable 300 IN A 127.0.0.1
_{p}._tcp.mx-unusable 300 IN TLSA 1 1 1 {ee}
mx-notls 300 IN A 127.0.0.1
_{q}._tcp.mx-notls 300 IN TLSA 3 1 1 {ee}
none 300 IN MX 10 mx-none
mx-none 300 IN A 127.0.0.1
""",
        )
        self.dns = DnsServer()
        self.dns.start()
        self.dns.add_signed_zone(self.zone)
        # An unsigned domain publishing a TLSA record that would not match.
        self.dns.add("plain.test", "MX", "10 mx.plain.test.")
        self.dns.add("mx.plain.test", "A", "127.0.0.1")
        self.dns.add(f"_{p}._tcp.mx.plain.test", "TLSA", f"3 1 1 {WRONG}")
        # An unsigned domain whose MX is a signed host with a TLSA record that would
        # not match: the MX answer is insecure, so DANE does not apply (RFC 7672 2.2.1).
        self.dns.add("insecure-mx.test", "MX", "10 mx-bad.dane.test.")
        self.unbound = Unbound(tmp / "unbound", self.dns.port, [self.zone.trust_anchor])
        self.unbound.start()

    def stop(self) -> None:
        self.unbound.stop()
        self.dns.stop()
        self.sink.stop()
        self.plain.stop()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    w = World(tmp_path_factory.mktemp("dane"))
    yield w
    w.stop()


async def start(harness: Harness, world: World, **delivery: object) -> None:
    dns = {"nameservers": ["127.0.0.1"], "port": world.unbound.port, "dnssec": True}
    settings = {"smtp_port": world.sink.port, "tls_security_level": "dane", "mta_sts": False}
    await harness.start(harness.config(dns=dns, **{**settings, **delivery}))


async def deliver(harness: Harness, route: str, rcpt: str) -> tuple[str, str, str]:
    qid = await harness.submit(route, [rcpt])
    [r] = (await harness.outcome(qid, within=20)).results
    return r.status, r.enhanced, r.text


async def test_a_dane_domain_is_delivered_when_its_tlsa_record_matches(
    harness: Harness, world: World
) -> None:
    await start(harness, world)
    before = len(world.sink.messages)
    assert (await deliver(harness, "mx", "bob@good.dane.test"))[0] == "delivered"
    received = world.sink.wait_for(before + 1)[-1]
    assert received.tls and received.rcpt_tos == ["bob@good.dane.test"]


async def test_a_dane_domain_is_deferred_when_no_tlsa_record_matches(
    harness: Harness, world: World
) -> None:
    await start(harness, world)
    before = len(world.sink.messages)
    status, enhanced, text = await deliver(harness, "mx", "bob@bad.dane.test")
    assert (status, enhanced) == ("deferred", "4.7.5")
    assert "no matching DANE TLSA records" in text
    assert len(world.sink.messages) == before


async def test_dane_ta_authenticates_the_issuer_and_checks_the_mx_name(
    harness: Harness, world: World
) -> None:
    await start(harness, world)
    assert (await deliver(harness, "mx", "bob@ta.dane.test"))[0] == "delivered"
    status, enhanced, text = await deliver(harness, "mx", "bob@ta-other.dane.test")
    assert (status, enhanced) == ("deferred", "4.7.5")
    assert "hostname mismatch" in text


async def test_a_host_with_tlsa_records_but_no_starttls_is_deferred_not_sent_in_clear(
    harness: Harness, world: World
) -> None:
    await start(harness, world)
    route = f"smtp:[mx-notls.dane.test]:{world.plain.port}"
    status, enhanced, text = await deliver(harness, route, "bob@notls.dane.test")
    assert (status, enhanced) == ("deferred", "4.7.4")
    assert world.plain.messages == []


async def test_tlsa_records_from_an_unsigned_zone_are_ignored(
    harness: Harness, world: World
) -> None:
    await start(harness, world)
    assert (await deliver(harness, "mx", "bob@plain.test"))[0] == "delivered"


async def test_tlsa_records_of_a_host_named_by_an_insecure_mx_answer_are_not_used(
    harness: Harness, world: World
) -> None:
    await start(harness, world)
    assert (await deliver(harness, "mx", "bob@insecure-mx.test"))[0] == "delivered"
    assert (await deliver(harness, "mx", "bob@bad.dane.test"))[0] == "deferred"


async def test_unusable_tlsa_records_still_make_tls_mandatory(
    harness: Harness, world: World
) -> None:
    await start(harness, world)
    before = len(world.sink.messages)
    assert (await deliver(harness, "mx", "bob@unusable.dane.test"))[0] == "delivered"
    assert world.sink.wait_for(before + 1)[-1].tls


async def test_a_signed_domain_without_tlsa_records_gets_opportunistic_tls(
    harness: Harness, world: World
) -> None:
    await start(harness, world)
    assert (await deliver(harness, "mx", "bob@none.dane.test"))[0] == "delivered"


async def test_without_a_validating_resolver_dane_never_applies(
    harness: Harness, world: World
) -> None:
    dns = {"nameservers": ["127.0.0.1"], "port": world.unbound.port, "dnssec": False}
    await harness.start(
        harness.config(dns=dns, smtp_port=world.sink.port, tls_security_level="dane", mta_sts=False)
    )
    assert (await deliver(harness, "mx", "bob@bad.dane.test"))[0] == "delivered"
