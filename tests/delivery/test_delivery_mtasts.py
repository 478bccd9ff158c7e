"""MTA-STS discovery: postfix-mta-sts-resolver's scenarios, caching, and policy parsing."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trustme
from mtasts_scenarios import install, nexthop_domain, refdata

from elemta.common.config import DnsSettings
from elemta.common.resolver import Resolver
from elemta.delivery.mtasts import (
    Discovery,
    MtaSts,
    PolicyCache,
    PolicyFetcher,
    StsError,
    StsPolicy,
    mx_pattern_matches,
    parse_record,
)

from support.dnsserver import DnsServer
from support.natsserver import NatsServer
from support.policyhost import PolicyHost

CHECKDMARC = Path(__file__).parent.parent / "data" / "mta-sts" / "checkdmarc"


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
async def policy_host(ca: trustme.CA, dns_server: DnsServer) -> AsyncIterator[PolicyHost]:
    host = PolicyHost(ca)
    install(dns_server, host)
    await host.start()
    yield host
    await host.stop()


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make_sts(
    dns_server: DnsServer,
    policy_host: PolicyHost,
    ca: trustme.CA,
    tmp_path: Path,
    clock: Clock,
    cache: PolicyCache | None = None,
) -> MtaSts:
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    resolver = Resolver(
        DnsSettings(nameservers=["127.0.0.1"], port=dns_server.port, timeout=1.0, cache_size=0)
    )
    fetcher = PolicyFetcher(resolver, ca_file=str(ca_file), timeout=3.0, port=policy_host.port)
    return MtaSts(resolver, fetcher, cache, clock=clock)


@pytest.fixture
async def sts(
    dns_server: DnsServer, policy_host: PolicyHost, ca: trustme.CA, tmp_path: Path, clock: Clock
) -> AsyncIterator[MtaSts]:
    sts = make_sts(dns_server, policy_host, ca, tmp_path, clock)
    yield sts
    await sts.close()


# From postfix-mta-sts-resolver's tests/test_resolver.py (test_resolve_status,
# test_resolve_dns_timeout): what resolving each scenario domain gives.
RESOLVER_EXPECTATIONS = [
    ("good.loc", Discovery.VALID),
    ("good.loc.", Discovery.VALID),
    ("testing.loc", Discovery.VALID),
    (".good.loc", Discovery.NONE),
    (".good.loc.", Discovery.NONE),
    ("valid-none.loc", Discovery.VALID),
    ("no-record.loc", Discovery.NONE),
    ("no-data.loc", Discovery.NONE),
    ("bad-record1.loc", Discovery.NONE),
    ("bad-record2.loc", Discovery.NONE),
    ("bad-record3.loc", Discovery.NONE),
    ("bad-policy1.loc", Discovery.FETCH_ERROR),
    ("bad-policy2.loc", Discovery.FETCH_ERROR),
    ("bad-policy3.loc", Discovery.FETCH_ERROR),
    ("bad-policy4.loc", Discovery.FETCH_ERROR),
    ("bad-policy5.loc", Discovery.FETCH_ERROR),
    ("bad-policy6.loc", Discovery.FETCH_ERROR),
    ("bad-policy7.loc", Discovery.FETCH_ERROR),
    ("bad-policy8.loc", Discovery.FETCH_ERROR),
    ("static-overlength.loc", Discovery.FETCH_ERROR),
    ("chunked-overlength.loc", Discovery.FETCH_ERROR),
    ("bad-cert1.loc", Discovery.FETCH_ERROR),
    ("bad-cert2.loc", Discovery.FETCH_ERROR),
    ("blackhole.loc", Discovery.FETCH_ERROR),
]


async def test_each_scenario_domain_resolves_as_postfix_mta_sts_resolver_expects(
    sts: MtaSts,
) -> None:
    got = {domain: (await sts.discover(domain))[0] for domain, _ in RESOLVER_EXPECTATIONS}
    assert got == dict(RESOLVER_EXPECTATIONS)


async def test_a_resolved_policy_has_its_fields_and_an_unchanged_id_is_not_fetched_again(
    sts: MtaSts, policy_host: PolicyHost
) -> None:
    status, policy = await sts.discover("good.loc")
    assert status is Discovery.VALID and policy is not None
    assert (policy.id, policy.mode, policy.max_age, policy.mx) == (
        "20180907T090909",
        "enforce",
        86400,
        ("mail.loc",),
    )
    assert await sts.discover("good.loc", known_id=policy.id) == (Discovery.NOT_CHANGED, None)
    assert policy_host.requests["good.loc"] == 1


def _socketmap_answer(policy: StsPolicy | None, strict: bool) -> str:
    """What postfix-mta-sts-resolver's socketmap says for a policy (servername aside)."""
    if policy is None or (policy.mode == "testing" and not strict):
        return "NOTFOUND "
    return "OK secure match=" + ":".join(policy.mx)


@pytest.mark.parametrize(("name", "strict"), [("refdata.tsv", False), ("refdata_strict.tsv", True)])
async def test_policies_in_force_match_the_socketmap_reference_answers(
    sts: MtaSts, name: str, strict: bool
) -> None:
    for query, expected in refdata(name):
        _zone, _, nexthop = query.partition(" ")
        lookup = await sts.lookup(nexthop_domain(nexthop))
        answer = _socketmap_answer(lookup.policy, strict)
        assert answer == expected.replace(" servername=hostname", ""), query


async def test_failures_carry_their_tls_rpt_result_types(sts: MtaSts) -> None:
    kinds = {}
    for domain in ("bad-policy1.loc", "bad-policy3.loc", "bad-policy4.loc", "bad-cert1.loc"):
        lookup = await sts.lookup(domain)
        assert lookup.policy is None and lookup.error is not None
        kinds[domain] = lookup.error.result_type
    assert kinds == {
        "bad-policy1.loc": "sts-policy-invalid",
        "bad-policy3.loc": "sts-policy-invalid",
        "bad-policy4.loc": "sts-policy-fetch-error",
        "bad-cert1.loc": "sts-webpki-invalid",
    }


async def test_a_cached_policy_outlives_a_vanished_record_until_max_age(
    sts: MtaSts, dns_server: DnsServer, clock: Clock
) -> None:
    assert (await sts.lookup("fast-expire.loc")).policy is not None
    dns_server.records.clear()  # the record (and the policy host's address) disappear
    assert (await sts.lookup("fast-expire.loc")).policy is not None  # max_age 1: still fresh
    clock.now += 2
    assert (await sts.lookup("fast-expire.loc")).policy is None


async def test_a_policy_host_that_fails_leaves_the_cached_policy_in_force(
    sts: MtaSts, policy_host: PolicyHost, dns_server: DnsServer
) -> None:
    first = (await sts.lookup("good.loc")).policy
    assert first is not None
    dns_server.add("_mta-sts.good.loc", "TXT", '"v=STSv1; id=changed"')
    policy_host.serve("good.loc", body="garbage")
    lookup = await sts.lookup("good.loc")
    assert lookup.policy == first
    assert lookup.error is not None and lookup.error.result_type == "sts-policy-invalid"


async def test_a_new_policy_id_fetches_the_new_policy(
    sts: MtaSts, policy_host: PolicyHost, dns_server: DnsServer
) -> None:
    assert (await sts.lookup("good.loc")).policy is not None
    dns_server.add("_mta-sts.good.loc", "TXT", '"v=STSv1; id=retired"')
    policy_host.serve("good.loc", body="version: STSv1\nmode: none\nmax_age: 86400\n")
    assert (await sts.lookup("good.loc")).policy is None  # mode none retires the policy
    assert policy_host.requests["good.loc"] == 2


async def test_every_delivery_process_shares_one_fetched_policy_through_jetstream_kv(
    nats_server: NatsServer,
    dns_server: DnsServer,
    policy_host: PolicyHost,
    ca: trustme.CA,
    tmp_path: Path,
    clock: Clock,
) -> None:
    import nats

    from elemta.common.jetstream import open_bucket
    from elemta.delivery.mtasts import STS_BUCKET

    nc = await nats.connect(nats_server.url)
    try:
        kv = await open_bucket(nc.jetstream(), STS_BUCKET, ttl=0)
        one = make_sts(dns_server, policy_host, ca, tmp_path, clock, PolicyCache(kv))
        two = make_sts(dns_server, policy_host, ca, tmp_path, clock, PolicyCache(kv))
        assert (await one.lookup("good.loc")).policy is not None
        assert (await two.lookup("good.loc")).policy is not None
        assert policy_host.requests["good.loc"] == 1
        await one.close()
        await two.close()
    finally:
        await nc.close()


# -- parsing -------------------------------------------------------------------------

# checkdmarc makes an unknown policy key an error; RFC 8461 3.2 lets a policy carry
# extension fields, so Elemta ignores it (and so do Postfix's resolver and Stalwart).
CHECKDMARC_DEVIATIONS = {"testParseMtaStsPolicyUnexpectedKey": "valid"}


def _checkdmarc_cases() -> list[dict[str, str]]:
    return list(json.loads((CHECKDMARC / "mta_sts_cases.json").read_text()))


@pytest.mark.parametrize("case", _checkdmarc_cases(), ids=lambda c: c["test"])
def test_checkdmarc_record_and_policy_cases_parse_as_expected(case: dict[str, str]) -> None:
    expected = CHECKDMARC_DEVIATIONS.get(case["test"], case["expect"])
    try:
        if case["kind"] == "txt_record":
            parse_record(case["input"])
        else:
            StsPolicy.parse(case["input"], "id1", 0.0)
    except (ValueError, StsError):
        outcome = "error"
    else:
        outcome = "valid"
    assert outcome == expected


@pytest.mark.parametrize(
    ("pattern", "host", "matches"),
    [
        ("mail.example.com", "mail.example.com", True),
        ("mail.example.com", "MAIL.example.com.", True),
        ("*.example.com", "mx1.example.com", True),
        ("*.example.com", "example.com", False),
        ("*.example.com", "a.mx1.example.com", False),
        ("mail.example.com", "mx.example.com", False),
    ],
)
def test_mx_patterns_match_one_leftmost_label_at_most(
    pattern: str, host: str, matches: bool
) -> None:
    assert mx_pattern_matches(pattern, host) is matches
