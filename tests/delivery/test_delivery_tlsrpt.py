"""TLS-RPT: sample reports against RFC 8460's schema, and the reports Elemta sends."""

from __future__ import annotations

import datetime as dt
import email
import gzip
import json
import ssl
from collections.abc import AsyncIterator, Iterator
from email.message import Message
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import trustme
from delivery_harness import Harness

from elemta.common.envelope import Envelope
from elemta.common.jetstream import ENVELOPE_HEADER, MESSAGES_STREAM
from elemta.delivery.tlsreport import parse_rua

from support.dnsserver import DnsServer
from support.policyhost import PolicyHost
from support.smtpsink import SmtpSink

DATA = Path(__file__).parent.parent / "data" / "tlsrpt"
SCHEMA = json.loads((DATA / "rfc8460.schema.json").read_text())
TESTING = "version: STSv1\nmode: testing\nmx: mx.sts.test\nmax_age: 86400\n"
DAY = dt.datetime(2026, 3, 10, 12, 0, tzinfo=dt.UTC).timestamp()
NEXT_DAY = dt.datetime(2026, 3, 11, 0, 20, tzinfo=dt.UTC).timestamp()


def validate(report: dict[str, Any]) -> None:
    jsonschema.validate(report, SCHEMA)


def attachment(msg: Message) -> tuple[str, dict[str, Any]]:
    [part] = [p for p in msg.walk() if p.get_content_type() == "application/tlsrpt+gzip"]
    payload = part.get_payload(decode=True)
    assert isinstance(payload, bytes)
    return part.get_filename() or "", json.loads(gzip.decompress(payload))


@pytest.mark.parametrize("name", ["rfc8460.json", "mail.ru.json", "smtp_tls.json"])
def test_sample_reports_validate_against_the_rfc_8460_schema(name: str) -> None:
    validate(json.loads((DATA / name).read_text()))


def test_a_mailed_sample_report_parses_and_validates() -> None:
    msg = email.message_from_bytes((DATA / "google.com_smtp_tls_report.eml").read_bytes())
    assert msg["TLS-Report-Domain"] == "cardinalhealth.ca"
    filename, report = attachment(msg)
    assert filename.startswith("google.com!cardinalhealth.ca!")
    validate(report)


def test_the_schema_refuses_what_rfc_8460_does_not_allow() -> None:
    report = json.loads((DATA / "rfc8460.json").read_text())
    report["policies"][0]["failure-details"][0]["result-type"] = "bad-weather"
    with pytest.raises(jsonschema.ValidationError):
        validate(report)


@pytest.mark.parametrize(
    ("records", "rua"),
    [
        (["v=TLSRPTv1; rua=mailto:r@example.org"], ["mailto:r@example.org"]),
        (
            ["v=TLSRPTv1;rua=mailto:a@x.example,https://r.example/v1"],
            ["mailto:a@x.example", "https://r.example/v1"],
        ),
        (["v=TLSRPTv1; rua=mailto:a@x.example", "v=spf1 -all"], ["mailto:a@x.example"]),
        (["v=TLSRPTv1; rua=mailto:a@x.example", "v=TLSRPTv1; rua=mailto:b@x"], None),
        (["v=TLSRPTv2; rua=mailto:a@x.example"], None),
        (["v=TLSRPTv1; rua=ftp://x.example/"], None),
    ],
)
def test_the_rua_of_a_tls_rpt_record_is_read_as_rfc_8460_3_says(
    records: list[str], rua: list[str] | None
) -> None:
    if rua is None:
        with pytest.raises(ValueError):
            parse_rua(records)
    else:
        assert parse_rua(records) == rua


# -- a day of deliveries, then its report ----------------------------------------------


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
async def policy_host(ca: trustme.CA) -> AsyncIterator[PolicyHost]:
    host = PolicyHost(ca)
    await host.start()
    yield host
    await host.stop()


@pytest.fixture
def context(ca: trustme.CA) -> ssl.SSLContext:
    return ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)


@pytest.fixture
def peer(context: ssl.SSLContext) -> Iterator[SmtpSink]:
    sink = SmtpSink(tls_context=context).start()
    yield sink
    sink.stop()


async def stored_reports(harness: Harness) -> list[tuple[Envelope, bytes]]:
    sub = await harness.js.pull_subscribe("elemta.msg.>", stream=MESSAGES_STREAM)
    out = []
    for msg in await sub.fetch(50, timeout=2):
        env = Envelope.from_header(msg.headers[ENVELOPE_HEADER])  # type: ignore[index]
        if env.sender.startswith("noreply-smtp-tls-reporting@"):
            out.append((env, msg.data))
    await sub.unsubscribe()
    return out


async def test_a_daily_report_counts_every_session_of_the_day_from_every_process(
    harness: Harness,
    dns_server: DnsServer,
    policy_host: PolicyHost,
    peer: SmtpSink,
    context: ssl.SSLContext,
    ca: trustme.CA,
    tmp_path: Path,
) -> None:
    dns_server.add("sts.test", "MX", "10 mx.sts.test.")
    dns_server.add("mx.sts.test", "A", "127.0.0.1")
    dns_server.add("_mta-sts.sts.test", "TXT", '"v=STSv1; id=1"')
    dns_server.add("mta-sts.sts.test", "A", "127.0.0.1")
    dns_server.add("reports.sts.test", "A", "127.0.0.1")
    rua = f"mailto:tls-reports@sts.test,https://reports.sts.test:{policy_host.port}/v1/tlsrpt"
    dns_server.add("_smtp._tls.sts.test", "TXT", f'"v=TLSRPTv1; rua={rua}"')
    policy_host.serve("sts.test", body=TESTING)
    policy_host.accept_posts("reports.sts.test")
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    clock = Clock(DAY)
    cfg = harness.config(
        tlsrpt={"enabled": True},
        smtp_port=peer.port,
        tls_ca_file=str(ca_file),
        mta_sts_port=policy_host.port,
        idle_connection_timeout=0,
    )
    one = await harness.start(cfg, clock=clock)
    two = await harness.start(cfg, clock=clock)

    # A certificate for another name (testing: delivered, and counted as failed),
    # then the right one, then the right one again.
    for name in ("someone-else.test", "mx.sts.test", "mx.sts.test"):
        ca.issue_cert(name).configure_cert(context)
        qid = await harness.submit("mx", ["bob@sts.test"])
        assert (await harness.outcome(qid)).results[0].status == "delivered"
    for service in (one, two):
        assert service.tls_results is not None
        await service.tls_results.flush()

    assert one.reports is not None and two.reports is not None
    assert await one.reports.run_once() == []  # the day is not over
    clock.now = NEXT_DAY
    assert await one.reports.run_once() + await two.reports.run_once() == ["sts.test"]

    [(env, data)] = await stored_reports(harness)
    assert env.recipients == ["tls-reports@sts.test"]
    msg = email.message_from_bytes(data)
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "tlsrpt"
    assert msg["TLS-Report-Domain"] == "sts.test"
    assert msg["TLS-Report-Submitter"] == "mx.elemta.test"
    assert msg["Subject"].startswith("Report Domain: sts.test Submitter: mx.elemta.test Report-ID:")
    filename, report = attachment(msg)
    validate(report)
    start = int(dt.datetime(2026, 3, 10, tzinfo=dt.UTC).timestamp())
    assert filename.startswith(f"mx.elemta.test!sts.test!{start}!{start + 86399}!")
    assert report["date-range"] == {
        "start-datetime": "2026-03-10T00:00:00Z",
        "end-datetime": "2026-03-10T23:59:59Z",
    }
    [policy] = report["policies"]
    assert policy["policy"] == {
        "policy-type": "sts",
        "policy-domain": "sts.test",
        "policy-string": ["version: STSv1", "mode: testing", "mx: mx.sts.test", "max_age: 86400"],
        "mx-host": "mx.sts.test",
    }
    assert policy["summary"] == {
        "total-successful-session-count": 2,
        "total-failure-session-count": 1,
    }
    [detail] = policy["failure-details"]
    assert detail["result-type"] == "certificate-host-mismatch"
    assert detail["receiving-mx-hostname"] == "mx.sts.test"
    assert detail["receiving-ip"] == detail["sending-mta-ip"] == "127.0.0.1"
    assert detail["failed-session-count"] == 1

    [(host, path, content_type, body)] = policy_host.posts
    assert (host, path, content_type) == (
        "reports.sts.test",
        "/v1/tlsrpt",
        "application/tlsrpt+gzip",
    )
    assert json.loads(gzip.decompress(body)) == report
