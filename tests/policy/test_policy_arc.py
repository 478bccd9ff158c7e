"""ARC: the ValiMail validation suite (171 tests) and signing suite (17 tests).

Keys are served by the real DNS server on 127.0.0.1 and fetched through the
policy service's own TXT lookup. The suites were converted once from the
upstream YAML (kept beside the JSON, MIT licence in LICENSE.txt).
"""

from __future__ import annotations

import re
import socket
from typing import Any

import dkim
import pytest
from dkim_arc_helpers import dns_settings, load_suite, serve_txt, txt_records

from elemta.common.config import DnsSettings
from elemta.policy.arc import ArcSealer, ArcSealError, ArcVerifier, strip_auth_results
from elemta.policy.dnstxt import TxtLookup

from support.dnsserver import DnsServer

VALIDATION = load_suite("arc-draft-validation-tests")
SIGNING = load_suite("arc-draft-sign-tests")


def _ws(text: str) -> str:
    return re.sub(r"\s+", "", text)


def test_the_validation_suite_has_171_tests_in_10_scenarios() -> None:
    assert len(VALIDATION) == 10
    assert sum(len(s["tests"]) for s in VALIDATION) == 171


async def test_every_validation_suite_test_gives_the_expected_cv(dns_server: DnsServer) -> None:
    for scenario in VALIDATION:
        serve_txt(dns_server, txt_records(scenario))
    verifier = ArcVerifier(dns_settings(dns_server))
    passed, wrong = 0, []
    for scenario in VALIDATION:
        for name, test in scenario["tests"].items():
            expected = (test["cv"] or "").strip().lower()
            result = await verifier.verify(test["message"].encode())
            if expected == "":
                # The suite leaves cv empty where the newest ARC-Seal says cv=fail:
                # the chain has ended. RFC 8617 5.2 step 2 calls that "fail".
                ok = result.cv == "fail" and "terminated" in result.reason
            else:
                ok = result.cv == expected
            if ok:
                passed += 1
            else:
                wrong.append(f"{scenario['description']}/{name}: want {expected!r}, got {result}")
    assert not wrong, "\n".join(wrong)
    assert passed == 171


def _merged_auth_results(message: bytes, srv_id: str) -> str:
    """The suite's Authentication-Results of ``srv_id``, consolidated as its README says."""
    head = re.split(rb"\r?\n\r?\n", message, maxsplit=1)[0]
    parts = []
    for field in re.split(rb"\r?\n(?=[^ \t])", head):
        name, _, value = field.partition(b":")
        if name.strip().lower() != b"authentication-results":
            continue
        ident, _, results = value.decode().partition(";")
        if ident.strip() == srv_id and results.strip():
            parts.append(results.strip().rstrip(";"))
    return "; ".join([srv_id, *parts])


def _verify_newest_set(sealed: bytes, cv: str, lookup: TxtLookup) -> dict[str, Any]:
    """dkimpy's check of the newest ARC set: AMS and seal signatures."""
    if cv == "fail":
        # A cv=fail seal covers its own set only: verify it without the older sets.
        newest = re.split(rb"\r?\n(?=[^ \t])", sealed, maxsplit=3)
        rest = b"\n".join(newest[3:])
        older = re.compile(
            rb"(?im)^arc-(seal|message-signature|authentication-results):.*(\r?\n[ \t].*)*\r?\n"
        )
        sealed = b"\n".join(newest[:3]) + b"\n" + older.sub(b"", rest)
    arc = dkim.ARC(sealed)
    instance, headers = arc.sorted_arc_headers()
    result: dict[str, Any] = arc.verify_instance(headers, instance, dnsfunc=lookup)
    return result


@pytest.mark.parametrize("scenario", SIGNING, ids=[s["description"] for s in SIGNING])
async def test_signing_suite_reproduces_the_ams_and_the_seal_verifies(
    dns_server: DnsServer, scenario: dict[str, Any]
) -> None:
    serve_txt(dns_server, txt_records(scenario))
    settings = dns_settings(dns_server)
    lookup = TxtLookup(settings)
    verifier = ArcVerifier(settings)
    for name, test in scenario["tests"].items():
        sealer = ArcSealer(
            test["srv-id"],
            scenario["domain"],
            scenario["sel"],
            scenario["privatekey"].encode(),
            test["sig-headers"].split(":"),
            oversign=False,
        )
        message = test["message"].encode()
        auth_results = _merged_auth_results(message, test["srv-id"])
        out = sealer.seal(message, auth_results, timestamp=test["t"], standardize=True)
        if not test["AMS"].strip():
            assert out == [], name  # the chain is not continued
            continue
        assert [h.split(b":", 1)[0] for h in out] == [
            b"ARC-Seal",
            b"ARC-Message-Signature",
            b"ARC-Authentication-Results",
        ], name
        fields = {h.split(b":", 1)[0]: h.split(b":", 1)[1].decode() for h in out}
        assert _ws(fields[b"ARC-Message-Signature"]) == _ws(test["AMS"]), name
        seal_tags = dict(t.strip().split("=", 1) for t in _ws(fields[b"ARC-Seal"]).split(";") if t)
        expected_seal = dict(t.split("=", 1) for t in _ws(test["AS"]).split(";") if t)
        for tag in ("i", "cv", "a", "d", "s", "t"):
            assert seal_tags[tag] == expected_seal[tag], (name, tag)
        # The copied results, comments aside (dkimpy drops them).
        aar = re.sub(r"\([^)]*\)", "", fields[b"ARC-Authentication-Results"])
        assert _ws(aar) == _ws(re.sub(r"\([^)]*\)", "", test["AAR"])), name
        sealed = b"".join(out) + message
        newest = _verify_newest_set(sealed, seal_tags["cv"], lookup)
        assert newest["ams-valid"] and newest["as-valid"], name
        if seal_tags["cv"] != "fail":
            assert (await verifier.verify(sealed)).cv == "pass", name


def test_the_signing_suite_has_17_tests() -> None:
    assert sum(len(s["tests"]) for s in SIGNING) == 17


KEY = SIGNING[0]["privatekey"].encode()
PLAIN = b"From: a@example.org\r\nTo: b@example.net\r\nSubject: hi\r\n\r\nbody\r\n"


def test_sealing_ignores_forged_results_of_our_own_authserv_id() -> None:
    forged = b"Authentication-Results: mx.example.org; spf=pass; dkim=pass\r\n" + PLAIN
    sealer = ArcSealer("mx.example.org", "example.org", "dummy", KEY)
    out = sealer.seal(forged, "mx.example.org; arc=none; spf=fail smtp.mailfrom=example.org")
    aar = [h for h in out if h.startswith(b"ARC-Authentication-Results:")][0]
    assert b"spf=fail" in aar and b"dkim=pass" not in aar
    assert b"Authentication-Results: mx.example.org" not in strip_auth_results(
        forged, "MX.example.org"
    )


def test_sealing_with_results_of_another_authserv_id_is_an_error() -> None:
    sealer = ArcSealer("mx.example.org", "example.org", "dummy", KEY)
    with pytest.raises(ArcSealError):
        sealer.seal(PLAIN, "other.example.org; arc=none")


async def test_a_message_without_arc_sets_has_cv_none_and_a_sealed_one_passes(
    dns_server: DnsServer,
) -> None:
    serve_txt(dns_server, txt_records(SIGNING[0]))
    verifier = ArcVerifier(dns_settings(dns_server))
    assert (await verifier.verify(PLAIN)).cv == "none"
    sealer = ArcSealer("mx.example.org", "example.org", "dummy", KEY)
    sealed = b"".join(sealer.seal(PLAIN, "mx.example.org; arc=none; spf=pass")) + PLAIN
    result = await verifier.verify(sealed)
    assert (result.cv, result.instances, result.domains) == ("pass", 1, ("example.org",))
    tampered = sealed.replace(b"body", b"BODY")
    assert (await verifier.verify(tampered)).cv == "fail"


async def test_a_dns_timeout_fails_the_chain_and_says_it_is_temporary() -> None:
    sealer = ArcSealer("mx.example.org", "example.org", "dummy", KEY)
    sealed = b"".join(sealer.seal(PLAIN, "mx.example.org; arc=none; spf=pass")) + PLAIN
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        settings = DnsSettings(nameservers=["127.0.0.1"], port=silent.getsockname()[1], timeout=0.3)
        result = await ArcVerifier(settings).verify(sealed)
    assert (result.cv, result.temperror) == ("fail", True)
    assert "timed out" in result.reason
