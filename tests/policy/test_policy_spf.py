"""SPF: the OpenSPF RFC 7208 suite over real DNS, the Received-SPF header, DNS failure."""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator

import pytest
import spf
from spf_suite import SpfCase, SpfSuiteServer, load_suite

from elemta.common.config import DnsSettings
from elemta.policy.spf import RESULTS, SpfChecker, SpfResult

SCENARIOS = load_suite()
CASES = [case for sc in SCENARIOS for case in sc.cases]
ZONES = {sc.description: sc.zonedata for sc in SCENARIOS}

# A TXT record with no strings at all cannot be put on the wire.
UNSERVABLE = {"null-text": "a TXT record with zero strings cannot be sent over DNS"}

# Short, so that the suite's names that never answer cost a second each, not five.
LOOKUP_TIMEOUT = 1.0


class LoadedServer:
    def __init__(self) -> None:
        self.server = SpfSuiteServer()
        self.server.start()
        self.scenario: str | None = None

    def serve(self, scenario: str) -> None:
        if self.scenario != scenario:
            self.server.load(ZONES[scenario])
            self.scenario = scenario

    def checker(self, **kw: object) -> SpfChecker:
        settings = DnsSettings(
            nameservers=["127.0.0.1"],
            port=self.server.port,
            timeout=LOOKUP_TIMEOUT,
            cache_size=0,
        )
        return SpfChecker(settings, **kw)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def suite_dns() -> Iterator[LoadedServer]:
    loaded = LoadedServer()
    yield loaded
    loaded.server.stop()


def _case_id(case: SpfCase) -> str:
    return case.id


@pytest.mark.parametrize("case", CASES, ids=_case_id)
async def test_the_openspf_rfc7208_case_gives_an_expected_result(
    case: SpfCase, suite_dns: LoadedServer
) -> None:
    if case.id in UNSERVABLE:
        pytest.skip(UNSERVABLE[case.id])
    suite_dns.serve(case.scenario)
    checker = suite_dns.checker(default_explanation="DEFAULT")

    res = await checker.check(case.host, case.mailfrom, case.helo)

    assert res.result in case.results, (
        f"{case.id} ({case.scenario}, RFC 7208 {case.spec}): got {res.result} "
        f"({res.explanation}), expected one of {case.results}"
    )
    if case.explanation is not None:
        assert res.explanation == case.explanation


def test_the_suite_is_all_there() -> None:
    assert len(SCENARIOS) == 16
    assert len(CASES) == 203


async def test_the_checked_domain_is_the_helo_name_for_a_null_sender(
    suite_dns: LoadedServer,
) -> None:
    suite_dns.serve(_scenario_of("nolocalpart"))
    checker = suite_dns.checker()

    res = await checker.check("1.2.3.4", "", "mail.example.net")
    with_sender = await checker.check("1.2.3.4", "<someone@example.net>", "other.example.org")

    assert (res.identity, res.domain, res.envelope_from) == (
        "helo",
        "mail.example.net",
        "postmaster@mail.example.net",
    )
    assert (with_sender.identity, with_sender.domain) == ("mailfrom", "example.net")
    assert with_sender.result == "fail"


def _scenario_of(case_id: str) -> str:
    return next(c.scenario for c in CASES if c.id == case_id)


# RFC 7208 9.1, with RFC 5322 comments and quoted-strings (no folding).
_QSTRING = r'"(?:[^"\\\r\n]|\\.)*"'
_DOT_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
_COMMENT = r"\((?:[^()\\\r\n]|\\.)*\)"
_PAIR = rf"[A-Za-z][A-Za-z0-9_.-]*=(?:{_DOT_ATOM}|{_QSTRING})"
RECEIVED_SPF = re.compile(
    rf"(?:{'|'.join(RESULTS)}) {_COMMENT} {_PAIR}(?:; {_PAIR})*;?\Z",
)


def _pairs(value: str) -> dict[str, str]:
    out = {}
    for m in re.finditer(rf"([a-z-]+)=({_DOT_ATOM}|{_QSTRING})", value.split(") ", 1)[1]):
        raw = m.group(2)
        if raw.startswith('"'):
            raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
        out[m.group(1)] = raw
    return out


async def test_the_received_spf_header_is_well_formed(suite_dns: LoadedServer) -> None:
    suite_dns.serve(_scenario_of("nolocalpart"))
    res = await suite_dns.checker().check("1.2.3.4", "jane@example.net", "mail.example.net")

    name, value = res.received_spf_header("mx.example.org")

    assert name == "Received-SPF"
    assert RECEIVED_SPF.match(value), value
    assert value.startswith("fail (mx.example.org: domain of jane@example.net does not designate")
    assert _pairs(value) == {
        "receiver": "mx.example.org",
        "client-ip": "1.2.3.4",
        "envelope-from": "jane@example.net",
        "helo": "mail.example.net",
        "identity": "mailfrom",
    }


def test_the_received_spf_header_quotes_what_a_client_sent() -> None:
    res = SpfResult(
        result="permerror",
        explanation="SPF Permanent Error: Unknown mechanism found: moo",
        domain="example.com",
        client_ip="2001:db8::1",
        envelope_from='we"ird(\\)@example.com',
        helo="evil\r\nX-Injected: yes",
        identity="mailfrom",
        problem="Unknown mechanism found: moo",
    )

    name, value = res.received_spf_header("mx.example.org")

    assert "\r" not in value and "\n" not in value
    assert RECEIVED_SPF.match(value), value
    pairs = _pairs(value)
    assert pairs["envelope-from"] == 'we"ird(\\)@example.com'
    assert pairs["client-ip"] == "2001:db8::1"
    assert pairs["problem"] == "Unknown mechanism found: moo"
    assert pairs["identity"] == "mailfrom"


@pytest.fixture
def dead_dns_port() -> Iterator[int]:
    """A loopback UDP port that is bound but never answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


async def test_a_dns_server_that_never_answers_gives_temperror(dead_dns_port: int) -> None:
    settings = DnsSettings(nameservers=["127.0.0.1"], port=dead_dns_port, timeout=0.3)

    res = await SpfChecker(settings).check("192.0.2.1", "a@example.com", "mail.example.com")

    assert res.result == "temperror"
    assert res.domain == "example.com"
    assert res.received_spf_header("mx")[1].startswith("temperror ")


async def test_an_unreachable_dns_server_gives_temperror() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    settings = DnsSettings(nameservers=["127.0.0.1"], port=port, timeout=0.5)

    res = await SpfChecker(settings).check("192.0.2.1", "", "mail.example.com")

    assert (res.result, res.identity, res.domain) == ("temperror", "helo", "mail.example.com")


async def test_an_unexpected_error_becomes_temperror(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(self: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr("elemta.policy.spf._Query.check", broken)
    checker = SpfChecker(DnsSettings(nameservers=["127.0.0.1"], port=9, timeout=0.2))

    res = await checker.check("192.0.2.1", "a@example.com", "mail.example.com")

    assert res.result == "temperror"
    assert "boom" in res.explanation


async def test_an_invalid_client_address_gives_temperror() -> None:
    checker = SpfChecker(DnsSettings(nameservers=["127.0.0.1"], port=9, timeout=0.2))

    res = await checker.check("not-an-ip", "a@example.com", "mail.example.com")

    assert res.result == "temperror"


def test_pyspfs_own_dns_lookup_is_left_alone() -> None:
    assert spf.DNSLookup is spf.DNSLookup_dnspython
