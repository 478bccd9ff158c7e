"""DANE matching: OpenSSL's 54 vectors, then the rules RFC 7671/7672 add for SMTP."""

from __future__ import annotations

import datetime as dt
import hashlib

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from dane_vectors import BASE_DOMAIN, DIGEST_ORDER, Case, anchors, cases

from elemta.delivery.certnames import name_matches
from elemta.delivery.dane import (
    X509_V_ERR_CERT_HAS_EXPIRED,
    X509_V_ERR_DANE_NO_MATCH,
    X509_V_ERR_HOSTNAME_MISMATCH,
    Tlsa,
    spki_der,
    usable_for_smtp,
    verify,
)

CASES = cases()


def test_the_vector_file_holds_all_54_cases() -> None:
    assert len(CASES) == 54
    assert {c.want_error for c in CASES} == {0, 20, 62, 65}


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"case{c.number}")
def test_openssl_dane_vector_gives_the_expected_verdict_and_depth(case: Case) -> None:
    verdict = verify(
        case.chain,
        case.records,
        [BASE_DOMAIN],
        ee_namechecks=case.ee_namechecks,
        pkix_anchors=anchors(),
        digest_order=DIGEST_ORDER,
        now=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    )
    assert (verdict.error, verdict.depth) == (case.want_error, case.want_depth), case.comment


# -- beyond the vectors ----------------------------------------------------------------


def _der(cert: trustme.Blob) -> bytes:
    return x509.load_pem_x509_certificate(cert.bytes()).public_bytes(serialization.Encoding.DER)


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def test_dane_ee_ignores_expiry_and_names(ca: trustme.CA) -> None:
    past = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    leaf = ca.issue_cert("other.example", not_before=past, not_after=past + dt.timedelta(days=1))
    der = _der(leaf.cert_chain_pems[0])
    record = Tlsa(3, 1, 1, _sha256(spki_der(der)))
    assert verify([der], [record], ["mx.example.org"]).ok


def test_dane_ta_refuses_an_expired_leaf(ca: trustme.CA) -> None:
    past = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    leaf = ca.issue_cert("mx.example.org", not_before=past, not_after=past + dt.timedelta(days=1))
    ca_der = _der(ca.cert_pem)
    chain = [_der(leaf.cert_chain_pems[0]), ca_der]
    verdict = verify(chain, [Tlsa(2, 0, 1, _sha256(ca_der))], ["mx.example.org"])
    assert (verdict.error, verdict.depth) == (X509_V_ERR_CERT_HAS_EXPIRED, 1)


def test_dane_ta_checks_the_leaf_name_against_the_mx_host(ca: trustme.CA) -> None:
    leaf = ca.issue_cert("mx.example.org")
    ca_der = _der(ca.cert_pem)
    chain = [_der(leaf.cert_chain_pems[0]), ca_der]
    record = Tlsa(2, 1, 1, _sha256(spki_der(ca_der)))
    assert verify(chain, [record], ["mx.example.org"]).ok
    assert verify(chain, [record], ["mx.other.org"]).error == X509_V_ERR_HOSTNAME_MISMATCH


def test_a_bare_trust_anchor_key_from_dns_authenticates_a_chain_without_it(
    ca: trustme.CA,
) -> None:
    leaf = ca.issue_cert("mx.example.org")
    record = Tlsa(2, 1, 0, spki_der(_der(ca.cert_pem)))
    verdict = verify([_der(leaf.cert_chain_pems[0])], [record], ["mx.example.org"])
    assert (verdict.ok, verdict.depth) == (True, 0)


def test_the_strongest_digest_decides_and_a_weaker_matching_one_is_ignored(
    ca: trustme.CA,
) -> None:
    der = _der(ca.issue_cert("mx.example.org").cert_chain_pems[0])
    right_256 = Tlsa(3, 0, 1, _sha256(der))
    wrong_512 = Tlsa(3, 0, 2, b"\x00" * 64)
    assert verify([der], [right_256], ["mx.example.org"]).ok
    assert verify([der], [right_256, wrong_512], ["mx.example.org"]).error == (
        X509_V_ERR_DANE_NO_MATCH
    )


def test_records_smtp_cannot_use_are_dropped() -> None:
    records = [
        Tlsa(3, 1, 1, b"\x01" * 32),
        Tlsa(2, 0, 2, b"\x02" * 64),
        Tlsa(1, 1, 1, b"\x03" * 32),  # PKIX-EE: unusable for SMTP (RFC 7672 3.1.3)
        Tlsa(0, 0, 1, b"\x04" * 32),  # PKIX-TA
        Tlsa(3, 1, 1, b"\x05" * 31),  # digest of the wrong length
        Tlsa(3, 2, 1, b"\x06" * 32),  # unknown selector
        Tlsa(3, 1, 9, b"\x07" * 32),  # unknown matching type
        Tlsa(4, 1, 1, b"\x08" * 32),  # unknown usage
        Tlsa(2, 0, 0, b"not a certificate"),
    ]
    assert usable_for_smtp(records) == records[:2]


@pytest.mark.parametrize(
    ("presented", "reference", "matches"),
    [
        ("mx.example.org", "mx.example.org", True),
        ("MX.Example.Org", "mx.example.org.", True),
        ("*.example.org", "mx.example.org", True),
        ("*.example.org", "example.org", False),
        ("*.example.org", "a.mx.example.org", False),
        ("mx.example.org", ".example.org", True),
        ("example.org", ".example.org", False),
    ],
)
def test_name_matching_follows_rfc_6125(
    ca: trustme.CA, presented: str, reference: str, matches: bool
) -> None:
    cert = x509.load_pem_x509_certificate(ca.issue_cert(presented).cert_chain_pems[0].bytes())
    assert name_matches(cert, [reference]) is matches
