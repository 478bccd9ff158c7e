"""DMARC: record parsing, alignment, From extraction and evaluation over real DNS.

Data: authheaders' DMARC cases (MIT), OpenDMARC's libopendmarc test tables (BSD)
and checkdmarc's record cases (Apache-2.0), copied under tests/data/dmarc/.
"""

from __future__ import annotations

import random
import re
import socket
from typing import Any

import pytest
from dmarc_harness import (
    AUTHHEADERS_SUITE,
    CHECKDMARC,
    OPENDMARC,
    SOURCES,
    ar_results,
    dkim_inputs,
    from_headers,
    message,
    serve_authheaders_dns,
)

from elemta.common.config import DnsSettings
from elemta.policy.dmarc import (
    DmarcEvaluator,
    DmarcResult,
    auth_results_fragment,
    enforcement_verdict,
)
from elemta.policy.dmarcrecord import (
    DmarcRecordError,
    aligned,
    from_domains,
    org_domain,
    parse_record,
)

from support.dnsserver import DnsServer


def evaluator(server: DnsServer, seed: int = 0) -> DmarcEvaluator:
    settings = DnsSettings(nameservers=["127.0.0.1"], port=server.port, timeout=2.0)
    return DmarcEvaluator(settings, rng=random.Random(seed))


# -- authheaders -------------------------------------------------------------------

CASES = AUTHHEADERS_SUITE["cases"]


def test_the_authheaders_suite_has_twelve_cases() -> None:
    assert len(CASES) == 12


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
async def test_authheaders_case_gives_the_expected_dmarc_verdict_and_policy(
    dns_server: DnsServer, case: dict[str, Any]
) -> None:
    serve_authheaders_dns(dns_server)
    raw = message(case)
    dkim_results, origin = dkim_inputs(case)
    expected = ar_results(case["expected_header"])
    if origin == "verified":  # dkimpy against the case's keys gives the expected dkim=
        want = [(r["result"], r["header.d"]) for r in expected if r["method"] == "dkim"]
        assert dkim_results == want
    dmarc_expected = [r for r in expected if r["method"] == "dmarc"]
    if case["kwargs"].get("dmarc", True) is False:
        assert dmarc_expected == []  # the DKIM-only case: nothing for DMARC to say
        return
    author = from_domains(from_headers(raw))
    # SPF is off in every case: no SPF pass to align with.
    result = await evaluator(dns_server).evaluate_author(author, "none", "", dkim_results)
    (want,) = dmarc_expected
    assert result.result == want["result"]
    assert result.policy == want.get("policy.dmarc", "none")
    if want["result"] != "none":
        assert result.domain == ("" if want["header.from"] == "none" else want["header.from"])
    for comment, source in SOURCES.items():
        if comment in want["comment"]:
            assert result.source == source


# -- OpenDMARC tables ---------------------------------------------------------------

OPENDMARC_KINDS = {
    "DMARC_PARSE_OKAY": None,
    "DMARC_PARSE_ERROR_EMPTY": "empty",
    "DMARC_PARSE_ERROR_BAD_VERSION": "bad_version",
    "DMARC_PARSE_ERROR_BAD_VALUE": "bad_value",
    "DMARC_PARSE_ERROR_NO_REQUIRED_P": "no_required_p",
}


def _parse_kind(text: str) -> str | None:
    try:
        parse_record(text)
    except DmarcRecordError as exc:
        return exc.kind
    return None


@pytest.mark.parametrize("case", OPENDMARC["record_parse"], ids=lambda c: c["record"] or "empty")
def test_record_parses_as_opendmarc_says(case: dict[str, str]) -> None:
    assert _parse_kind(case["record"]) == OPENDMARC_KINDS[case["expect"]]


@pytest.mark.parametrize(
    "case", OPENDMARC["alignment"], ids=lambda c: f"{c['from_domain']}~{c['auth_domain']}"
)
def test_alignment_matches_opendmarc(case: dict[str, Any]) -> None:
    mode = "r" if case["mode"].endswith("RELAXED") else "s"
    assert aligned(case["from_domain"], case["auth_domain"], mode) is case["expect_aligned"]


@pytest.mark.parametrize("case", OPENDMARC["from_header_domain"], ids=lambda c: c["raw"])
def test_from_domain_is_extracted_as_opendmarc_does(case: dict[str, str]) -> None:
    assert from_domains([case["raw"]]).domain == case["domain"]


# -- checkdmarc -------------------------------------------------------------------------

# Where checkdmarc (which follows DMARCbis) and RFC 7489 part ways; we follow the RFC.
CHECKDMARC_DIFFERENCES = {
    # RFC 7489 6.6.3: a record without a valid p but with a valid rua is read as p=none.
    "testInvalidDMARCPolicyValue": "valid",
    # RFC 7489 6.3: ri is a 32-bit number and rf a list of registered formats
    # (afrf); DMARCbis dropped both tags, so checkdmarc no longer checks them.
    "testDMARCRiRemovedNotValidated": "error",
    "testDMARCRfRemovedNotValidated": "error",
}
_TAG_ASSERT = re.compile(r'result\["tags"\]\["(\w+)"\]\["value"\], "(\w+)"')


@pytest.mark.parametrize("case", CHECKDMARC["cases"], ids=lambda c: c["test"])
def test_record_validity_matches_checkdmarc_except_where_it_leaves_rfc_7489(
    case: dict[str, Any],
) -> None:
    want = CHECKDMARC_DIFFERENCES.get(case["test"], case["expect"])
    try:
        record = parse_record(case["record"])
    except DmarcRecordError:
        assert want == "error"
        return
    assert want == "valid"
    effective = {
        "p": record.p,
        "sp": record.subdomain_policy,
        "np": record.nonexistent_policy,
        "psd": record.psd,
        "t": record.t,
    }
    for a in case["asserts"]:
        m = _TAG_ASSERT.search(a)
        if m:
            assert effective[m.group(1)] == m.group(2)


def test_the_checkdmarc_differences_are_all_real_cases() -> None:
    names = {c["test"] for c in CHECKDMARC["cases"]}
    assert set(CHECKDMARC_DIFFERENCES) <= names
    for c in CHECKDMARC["cases"]:
        if c["test"] in CHECKDMARC_DIFFERENCES:
            assert c["expect"] != CHECKDMARC_DIFFERENCES[c["test"]]


# -- records --------------------------------------------------------------------------


def test_a_record_without_p_but_with_a_valid_rua_reads_as_p_none() -> None:
    record = parse_record("v=DMARC1; sp=reject; rua=mailto:d@example.com")
    assert (record.p, record.sp, record.p_defaulted) == ("none", None, True)


def test_a_record_without_p_or_rua_means_no_dmarc() -> None:
    with pytest.raises(DmarcRecordError) as info:
        parse_record("v=DMARC1; sp=quarantine; np=reject")
    assert info.value.kind == "no_required_p" and info.value.policy_problem


def test_record_defaults_follow_rfc_7489() -> None:
    record = parse_record("v=DMARC1; p=reject")
    assert (record.adkim, record.aspf, record.pct, record.ri) == ("r", "r", 100, 86400)
    assert (record.fo, record.rf) == (("0",), ("afrf",))


def test_a_record_must_start_with_the_version() -> None:
    assert _parse_kind("p=none; v=DMARC1") == "bad_version"
    assert _parse_kind("v=DMARC2; p=none") == "bad_version"
    assert _parse_kind("; p=none") == "bad_version"


def test_organisational_domains_come_from_the_public_suffix_list() -> None:
    assert org_domain("a.b.example.co.uk") == "example.co.uk"
    assert org_domain("mail.example.com.") == "example.com"
    assert org_domain("gov") == "gov"


def test_several_from_fields_are_flagged() -> None:
    author = from_domains([("From", "a@example.com"), ("From", "b@example.org")])
    assert author.problem == "multiple-fields"


def test_a_message_without_from_is_flagged() -> None:
    assert from_domains([("To", "a@example.com")]).problem == "missing"


# -- evaluation -------------------------------------------------------------------------


def _publish(server: DnsServer, name: str, record: str) -> None:
    server.add(f"_dmarc.{name}", "TXT", f'"{record}"')


async def test_aligned_spf_passes(dns_server: DnsServer) -> None:
    _publish(dns_server, "example.com", "v=DMARC1; p=reject")
    result = await evaluator(dns_server).evaluate("example.com", "pass", "bounce.example.com", [])
    assert (result.result, result.spf_aligned, result.disposition) == ("pass", True, "none")


async def test_strict_spf_alignment_needs_the_exact_domain(dns_server: DnsServer) -> None:
    _publish(dns_server, "example.com", "v=DMARC1; p=reject; aspf=s")
    result = await evaluator(dns_server).evaluate("example.com", "pass", "bounce.example.com", [])
    assert (result.result, result.policy, result.disposition) == ("fail", "reject", "reject")


async def test_strict_dkim_alignment_needs_the_exact_domain(dns_server: DnsServer) -> None:
    _publish(dns_server, "example.com", "v=DMARC1; p=quarantine; adkim=s")
    ev = evaluator(dns_server)
    sub = await ev.evaluate("example.com", "fail", "example.com", [("pass", "mail.example.com")])
    exact = await ev.evaluate("example.com", "fail", "example.com", [("pass", "example.com")])
    assert (sub.result, exact.result, exact.dkim_aligned) == ("fail", "pass", True)


async def test_a_failing_dkim_signature_does_not_align(dns_server: DnsServer) -> None:
    _publish(dns_server, "example.com", "v=DMARC1; p=reject")
    result = await evaluator(dns_server).evaluate(
        "example.com", "none", "", [("fail", "example.com")]
    )
    assert result.result == "fail"


async def test_a_domain_without_a_record_gets_none(dns_server: DnsServer) -> None:
    result = await evaluator(dns_server).evaluate("example.com", "pass", "example.com", [])
    assert (result.result, result.policy) == ("none", "none")


async def test_several_dmarc_records_mean_no_dmarc(dns_server: DnsServer) -> None:
    dns_server.add_zone(
        ".",
        '_dmarc.example.com. 300 IN TXT "v=DMARC1; p=none"\n'
        '_dmarc.example.com. 300 IN TXT "v=DMARC1; p=reject"\n'
        '_dmarc.example.com. 300 IN TXT "not dmarc"\n',
    )
    result = await evaluator(dns_server).evaluate("example.com", "none", "", [])
    assert result.result == "none"


async def test_a_dns_failure_is_a_temperror() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:  # takes queries, never answers
        silent.bind(("127.0.0.1", 0))
        port = silent.getsockname()[1]
        settings = DnsSettings(nameservers=["127.0.0.1"], port=port, timeout=0.5)
        result = await DmarcEvaluator(settings).evaluate("example.com", "none", "", [])
    assert (result.result, result.policy) == ("temperror", "none")


async def test_pct_sampling_applies_the_next_weaker_policy_outside_the_sample(
    dns_server: DnsServer,
) -> None:
    _publish(dns_server, "example.com", "v=DMARC1; p=reject; pct=30")
    ev = evaluator(dns_server, seed=7)
    results = [await ev.evaluate("example.com", "fail", "", []) for _ in range(200)]
    rejected = sum(r.disposition == "reject" for r in results)
    assert {r.disposition for r in results} == {"reject", "quarantine"}
    assert 35 <= rejected <= 85
    again = evaluator(dns_server, seed=7)
    repeat = [(await again.evaluate("example.com", "fail", "", [])).disposition for _ in range(200)]
    assert repeat == [r.disposition for r in results]


async def test_pct_zero_quarantine_becomes_none(dns_server: DnsServer) -> None:
    _publish(dns_server, "example.com", "v=DMARC1; p=quarantine; pct=0")
    result = await evaluator(dns_server).evaluate("example.com", "fail", "", [])
    assert (result.policy, result.disposition) == ("quarantine", "none")


# -- enforcement -----------------------------------------------------------------------------


def _failed(disposition: str) -> DmarcResult:
    return DmarcResult("fail", policy="reject", disposition=disposition, domain="example.com")


def test_enforce_mode_rejects_with_550_5_7_1() -> None:
    verdict = enforcement_verdict(_failed("reject"), "enforce")
    assert (verdict.action, verdict.code, verdict.enhanced) == ("reject", 550, "5.7.1")
    assert verdict.reason == "DMARC policy of example.com rejects this message"


def test_enforce_mode_holds_quarantined_mail() -> None:
    assert enforcement_verdict(_failed("quarantine"), "enforce").action == "hold"


def test_enforce_mode_accepts_a_sampled_out_failure() -> None:
    assert enforcement_verdict(_failed("none"), "enforce").action == "accept"


def test_monitor_mode_accepts_everything() -> None:
    assert enforcement_verdict(_failed("reject"), "monitor").action == "accept"


def test_the_authentication_results_fragment_names_policy_and_disposition() -> None:
    fragment = auth_results_fragment(_failed("quarantine"))
    assert fragment == "dmarc=fail (p=reject dis=quarantine) header.from=example.com"


async def test_a_public_suffix_record_without_psd_y_is_not_used(dns_server: DnsServer) -> None:
    _publish(dns_server, "gov", "v=DMARC1; p=reject")
    result = await evaluator(dns_server).evaluate("example.gov", "none", "", [])
    assert result.result == "none"


async def test_several_from_fields_are_a_permerror(dns_server: DnsServer) -> None:
    _publish(dns_server, "example.com", "v=DMARC1; p=reject")
    author = from_domains([("From", "a@example.com"), ("From", "b@example.com")])
    result = await evaluator(dns_server).evaluate_author(author, "pass", "example.com", [])
    assert (result.result, result.policy) == ("permerror", "none")


async def test_np_applies_to_a_subdomain_with_no_a_aaaa_or_mx(dns_server: DnsServer) -> None:
    _publish(dns_server, "example.biz", "v=DMARC1; p=none; sp=quarantine; np=reject")
    dns_server.add("txtonly.example.biz", "TXT", '"no address, no mail"')  # NODATA: RFC 9091 2.6
    dns_server.add("mail.example.biz", "A", "192.0.2.1")
    ev = evaluator(dns_server)
    missing = await ev.evaluate("gone.example.biz", "none", "", [])
    txtonly = await ev.evaluate("txtonly.example.biz", "none", "", [])
    real = await ev.evaluate("mail.example.biz", "none", "", [])
    top = await ev.evaluate("example.biz", "none", "", [])
    assert [r.policy for r in (missing, txtonly, real, top)] == [
        "reject",
        "reject",
        "quarantine",
        "none",
    ]
