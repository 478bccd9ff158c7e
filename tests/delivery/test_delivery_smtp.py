"""SMTP delivery: MX and relay routes against aiosmtpd sinks, outcomes in JetStream."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiosmtpd.controller import Controller
from delivery_harness import BODY, Harness, metric
from opentelemetry.propagate import extract
from opentelemetry.trace import get_current_span

from elemta.common.config import parse_route
from elemta.common.envelope import DeliveryJob

from support.dnsserver import DnsServer, free_port
from support.smtpsink import SmtpSink


def mx_for(dns_server: DnsServer, domain: str, host: str = "mx") -> None:
    dns_server.add(domain, "MX", f"10 {host}.{domain}.")
    dns_server.add(f"{host}.{domain}", "A", "127.0.0.1")


async def test_mx_delivery_reaches_the_mx_host_and_reports_delivered(
    harness: Harness, dns_server: DnsServer, sink: SmtpSink
) -> None:
    mx_for(dns_server, "example.test")
    await harness.start(smtp_port=sink.port)
    qid = await harness.submit("mx", ["bob@example.test", "carol@example.test"])

    outcome = await harness.outcome(qid)
    assert outcome.id == qid
    assert outcome.dest == "mx:example.test"
    assert outcome.host == f"mx.example.test[127.0.0.1]:{sink.port}"
    assert [(r.recipient, r.status, r.code) for r in outcome.results] == [
        ("bob@example.test", "delivered", 250),
        ("carol@example.test", "delivered", 250),
    ]
    assert outcome.results[0].enhanced == "2.0.0"
    assert outcome.worker and outcome.finished_at > 0
    [received] = sink.wait_for(1)
    assert received.mail_from == "alice@sender.test"
    assert received.rcpt_tos == ["bob@example.test", "carol@example.test"]
    assert received.content == BODY
    assert await harness.jobs_left() == 0  # acked


async def test_relay_route_sends_to_the_named_host_without_mx_lookup(
    harness: Harness, dns_server: DnsServer, sink: SmtpSink
) -> None:
    await harness.start()
    qid = await harness.submit(f"smtp:[127.0.0.1]:{sink.port}", ["dave@elsewhere.test"])

    outcome = await harness.outcome(qid)
    assert outcome.results[0].status == "delivered"
    assert outcome.host == f"127.0.0.1[127.0.0.1]:{sink.port}"
    assert sink.wait_for(1)[0].rcpt_tos == ["dave@elsewhere.test"]
    assert dns_server.queries == 0


async def test_a_job_from_a_newer_queue_is_delivered(harness: Harness, sink: SmtpSink) -> None:
    """During a rolling upgrade a newer queue may write fields (in the job and in
    its route) that this delivery does not know: they are left out, not refused."""
    await harness.start()
    qid, seq = await harness.store("alice@sender.test", ["dave@elsewhere.test"])
    route = parse_route(f"smtp:[127.0.0.1]:{sink.port}")
    job = DeliveryJob(
        qid,
        route.key(),
        {**route.model_dump(), "from_a_newer_version": True},
        "elsewhere.test",
        "alice@sender.test",
        ["dave@elsewhere.test"],
        seq,
    )
    newer = {**json.loads(job.encode()), "from_a_newer_version": {"x": [1, 2]}}
    await harness.js.publish(f"elemta.delivery.{qid}", json.dumps(newer).encode())

    outcome = await harness.outcome(qid)
    assert [(r.recipient, r.status) for r in outcome.results] == [
        ("dave@elsewhere.test", "delivered")
    ]
    [received] = sink.wait_for(1)
    assert received.rcpt_tos == ["dave@elsewhere.test"]
    assert received.content == BODY


async def test_temporary_recipient_rejection_is_reported_deferred_with_the_servers_reply(
    harness: Harness, sink: SmtpSink
) -> None:
    sink.rcpt_replies["busy@example.test"] = "450 4.2.1 Mailbox busy, try later"
    await harness.start()
    qid = await harness.submit(
        f"smtp:[127.0.0.1]:{sink.port}", ["bob@example.test", "busy@example.test"]
    )

    outcome = await harness.outcome(qid)
    ok, busy = outcome.results
    assert (ok.status, ok.code) == ("delivered", 250)
    assert (busy.recipient, busy.status, busy.code, busy.enhanced, busy.text) == (
        "busy@example.test",
        "deferred",
        450,
        "4.2.1",
        "Mailbox busy, try later",
    )
    assert outcome.host == f"127.0.0.1[127.0.0.1]:{sink.port}"
    assert sink.wait_for(1)[0].rcpt_tos == ["bob@example.test"]


async def test_permanent_rejection_is_reported_failed(harness: Harness, sink: SmtpSink) -> None:
    sink.rcpt_replies["nobody@example.test"] = "550 5.1.1 No such user here"
    await harness.start()
    qid = await harness.submit(f"smtp:[127.0.0.1]:{sink.port}", ["nobody@example.test"])

    [result] = (await harness.outcome(qid)).results
    assert (result.status, result.code, result.enhanced, result.text) == (
        "failed",
        550,
        "5.1.1",
        "No such user here",
    )
    assert sink.messages == []


async def test_rejection_of_the_message_applies_to_every_accepted_recipient(
    harness: Harness, sink: SmtpSink
) -> None:
    sink.data_replies["*"] = "554 5.7.1 Message refused"
    await harness.start()
    qid = await harness.submit(
        f"smtp:[127.0.0.1]:{sink.port}", ["a@example.test", "b@example.test"]
    )

    outcome = await harness.outcome(qid)
    assert [(r.status, r.code, r.enhanced) for r in outcome.results] == [
        ("failed", 554, "5.7.1")
    ] * 2


async def test_refused_connection_is_deferred_with_4_4_1(harness: Harness) -> None:
    port = free_port()
    await harness.start()
    qid = await harness.submit(f"smtp:[127.0.0.1]:{port}", ["bob@example.test"])

    outcome = await harness.outcome(qid)
    [result] = outcome.results
    assert (result.status, result.enhanced) == ("deferred", "4.4.1")
    assert "Connection refused" in result.text
    assert outcome.host == f"127.0.0.1[127.0.0.1]:{port}"


async def test_unreachable_mx_host_is_skipped_for_the_next_one(
    harness: Harness, dns_server: DnsServer, sink: SmtpSink
) -> None:
    dns_server.add_zone("example.test.", "@ 300 IN MX 10 dead\n@ 300 IN MX 20 live\n")
    dns_server.add("dead.example.test", "A", "127.0.0.2")  # nothing listens there
    dns_server.add("live.example.test", "A", "127.0.0.1")
    await harness.start(smtp_port=sink.port)
    qid = await harness.submit("mx", ["bob@example.test"])

    outcome = await harness.outcome(qid)
    assert outcome.results[0].status == "delivered"
    assert outcome.host.startswith("live.example.test[127.0.0.1]")


async def test_null_mx_domain_fails_with_5_1_10(harness: Harness, dns_server: DnsServer) -> None:
    dns_server.add("nomail.test", "MX", "0 .")
    await harness.start()
    qid = await harness.submit("mx", ["bob@nomail.test"])

    [result] = (await harness.outcome(qid)).results
    assert (result.status, result.code, result.enhanced) == ("failed", 556, "5.1.10")


async def test_nonexistent_domain_fails(harness: Harness, dns_server: DnsServer) -> None:
    dns_server.add("exists.test", "A", "192.0.2.1")
    await harness.start()
    qid = await harness.submit("mx", ["bob@missing.test"])

    [result] = (await harness.outcome(qid)).results
    assert (result.status, result.code, result.enhanced) == ("failed", 550, "5.1.2")


async def test_dns_outage_defers(harness: Harness) -> None:
    await harness.start(harness.config(dns={"port": free_port(), "timeout": 0.5}))
    qid = await harness.submit("mx", ["bob@example.test"])

    [result] = (await harness.outcome(qid)).results
    assert (result.status, result.code, result.enhanced) == ("deferred", 451, "4.4.3")


async def test_consecutive_jobs_to_one_destination_share_one_connection(
    harness: Harness, sink: SmtpSink
) -> None:
    await harness.start()
    opened = metric("elemta_delivery_connections_opened_total")
    reused = metric("elemta_delivery_connections_reused_total")
    route = f"smtp:[127.0.0.1]:{sink.port}"

    first = await harness.submit(route, ["one@example.test"])
    await harness.outcome(first)
    second = await harness.submit(route, ["two@example.test"])
    await harness.outcome(second)

    assert len(sink.wait_for(2)) == 2
    assert metric("elemta_delivery_connections_opened_total") - opened == 1
    assert metric("elemta_delivery_connections_reused_total") - reused == 1


async def test_outcome_joins_the_trace_of_the_job(harness: Harness, sink: SmtpSink) -> None:
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    parent = {"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"}
    await harness.start()
    qid = await harness.submit(
        f"smtp:[127.0.0.1]:{sink.port}", ["bob@example.test"], headers=parent
    )

    raw = await harness.outcome_msg(qid)
    ctx = extract(raw.headers or {})
    assert format(get_current_span(ctx).get_span_context().trace_id, "032x") == trace_id


class _Recorder:
    def __init__(self) -> None:
        self.mail_options: list[list[str]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.mail_options.append(list(envelope.mail_options))
        return "250 2.0.0 OK"


async def test_smtputf8_message_fails_with_5_6_7_when_the_peer_does_not_offer_smtputf8(
    harness: Harness,
) -> None:
    plain = Controller(_Recorder(), hostname="127.0.0.1", port=free_port(), enable_SMTPUTF8=False)
    plain.start()
    try:
        await harness.start()
        qid = await harness.submit(
            f"smtp:[127.0.0.1]:{plain.port}", ["bob@example.test"], smtputf8=True
        )
        [result] = (await harness.outcome(qid)).results
    finally:
        plain.stop()
    assert (result.status, result.code, result.enhanced) == ("failed", 553, "5.6.7")


async def test_smtputf8_and_8bitmime_are_requested_when_offered(harness: Harness) -> None:
    recorder = _Recorder()
    peer = Controller(recorder, hostname="127.0.0.1", port=free_port(), enable_SMTPUTF8=True)
    peer.start()
    try:
        await harness.start()
        qid = await harness.submit(
            f"smtp:[127.0.0.1]:{peer.port}",
            ["bob@example.test"],
            sender="élise@sender.test",
            smtputf8=True,
            body_8bit=True,
        )
        [result] = (await harness.outcome(qid)).results
    finally:
        peer.stop()
    assert result.status == "delivered"
    assert {"SMTPUTF8", "BODY=8BITMIME"} <= set(recorder.mail_options[0])


async def test_message_whose_stored_copy_is_gone_is_acked_without_outcome(
    harness: Harness, sink: SmtpSink
) -> None:
    await harness.start()
    qid, seq = await harness.store("alice@sender.test", ["bob@example.test"])
    await harness.delete_message(seq)
    await harness.publish_job(qid, seq, f"smtp:[127.0.0.1]:{sink.port}", ["bob@example.test"])

    for _ in range(100):
        if await harness.jobs_left() == 0:
            break
        await asyncio.sleep(0.05)
    assert await harness.jobs_left() == 0
    assert await harness.outcomes_stored() == 0
    assert sink.messages == []
