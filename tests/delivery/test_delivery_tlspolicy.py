"""Which TLS a destination gets, and how a presented chain is judged at ``verify``."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from elemta.common.config import Config, Route, parse_route
from elemta.common.envelope import DeliveryJob
from elemta.common.resolver import Resolver
from elemta.delivery.tlscheck import Verifier
from elemta.delivery.tlspolicy import TlsPolicy, TlsRequirement

TABLE = {
    "example.org": "verify",
    ".example.org": "encrypt",
    "[relay.example]:2525": "none",
    ".test": "dane",
}


def policy(**delivery: object) -> TlsPolicy:
    cfg = Config.model_validate({"delivery": {"tls_policy": TABLE, **delivery}})
    return TlsPolicy(cfg, Resolver(cfg.dns))


def job(domain: str, route: Route) -> DeliveryJob:
    return DeliveryJob("Q", route.key(), route.model_dump(), domain, "a@b.c", [f"x@{domain}"], 1)


@pytest.mark.parametrize(
    ("domain", "route", "level"),
    [
        ("example.org", "mx", "verify"),
        ("mail.example.org", "mx", "encrypt"),
        ("deep.mail.example.org", "mx", "encrypt"),
        ("elsewhere.net", "mx", "may"),
        ("a.b.test", "mx", "dane"),
        ("example.org", "smtp:[relay.example]:2525", "none"),
        ("elsewhere.net", "smtp:[other.example]:25", "may"),
    ],
)
def test_the_level_comes_from_next_hop_then_domain_then_parents_then_default(
    domain: str, route: str, level: str
) -> None:
    r = parse_route(route)
    assert policy().destination(job(domain, r), r).level == level


def test_a_relay_entry_sets_the_level_of_its_next_hop() -> None:
    p = policy(relays={"[smarthost.example]:465": {"implicit_tls": True}})
    r = parse_route("smtp:[smarthost.example]:465")
    dest = p.destination(job("anywhere.example", r), r)
    assert (dest.level, dest.relay is not None and dest.relay.implicit_tls) == ("verify", True)


# -- verify ----------------------------------------------------------------------------


def _chain(leaf: trustme.LeafCert) -> list[bytes]:
    return [
        x509.load_pem_x509_certificate(b.bytes()).public_bytes(serialization.Encoding.DER)
        for b in leaf.cert_chain_pems
    ]


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def verifier(ca: trustme.CA, tmp_path: Path) -> Verifier:
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    return Verifier(str(tmp_path / "ca.pem"))


VERIFY = TlsRequirement(level="verify", names=("mx.example.org",))


def test_a_chain_from_the_trusted_ca_for_the_host_name_verifies(
    ca: trustme.CA, verifier: Verifier
) -> None:
    assert verifier.check(VERIFY, _chain(ca.issue_cert("mx.example.org"))).ok


@pytest.mark.parametrize(
    ("kind", "result_type"),
    [
        ("other-name", "certificate-host-mismatch"),
        ("expired", "certificate-expired"),
        ("other-ca", "certificate-not-trusted"),
    ],
)
def test_each_verification_failure_has_its_tls_rpt_result_type(
    ca: trustme.CA, verifier: Verifier, kind: str, result_type: str
) -> None:
    past = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    leaf = {
        "other-name": lambda: ca.issue_cert("mx.other.org"),
        "expired": lambda: ca.issue_cert(
            "mx.example.org", not_before=past, not_after=past + dt.timedelta(days=1)
        ),
        "other-ca": lambda: trustme.CA().issue_cert("mx.example.org"),
    }[kind]()
    verdict = verifier.check(VERIFY, _chain(leaf))
    assert verdict.result_type == result_type, verdict.reason


def test_nothing_is_checked_where_nothing_is_required(ca: trustme.CA, verifier: Verifier) -> None:
    chain = _chain(trustme.CA().issue_cert("whatever.example"))
    assert verifier.check(TlsRequirement(level="encrypt"), chain).ok
