"""Outcomes: delivered, deferred, failed and expired recipients."""

from __future__ import annotations

import email
import email.policy
from email.message import EmailMessage

from queue_harness import QueueHarness, eventually

from elemta.common.envelope import Envelope, Outcome, RecipientResult
from elemta.common.jetstream import DELIVERY_STREAM, MESSAGES_STREAM

from support.clock import FakeClock


async def _bounces(harness: QueueHarness, original: set[int]) -> list[tuple[Envelope, bytes]]:
    return [(env, data) for _, env, data in await harness.stored(exclude=original)]


def _parse(data: bytes) -> EmailMessage:
    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def _report_blocks(dsn: EmailMessage) -> list[dict[str, str]]:
    part = next(p for p in dsn.iter_parts() if p.get_content_type() == "message/delivery-status")
    return [dict(block.items()) for block in part.get_payload()]  # type: ignore[union-attr]


async def test_delivered_message_is_removed_with_its_state(harness: QueueHarness) -> None:
    await harness.start_queue()
    env, _ = await harness.store(["b@a.test", "c@b.test"])
    jobs = await harness.take_jobs(2)
    await harness.report(jobs[0][0], "delivered")
    st = await eventually(
        lambda: _state_where(harness, env.id, lambda s: s["dests"][jobs[0][0].dest]["status"])
    )
    assert st["dests"][jobs[0][0].dest]["status"] == "done"
    assert await harness.count(MESSAGES_STREAM) == 1

    await harness.report(jobs[1][0], "delivered")
    await eventually(lambda: _is_gone(harness, env.id))
    assert await harness.count(MESSAGES_STREAM) == 0
    types = await eventually(lambda: _types_with(harness, env.id, "done"))
    assert types.count("attempt") == 2
    assert types.count("delivered") == 2


async def test_large_body_is_deleted_from_the_object_store_when_done(
    harness: QueueHarness,
) -> None:
    await harness.start_queue()
    env, _ = await harness.store(["b@a.test"], body_object=True)
    [(job, _)] = await harness.take_jobs(1)
    await harness.report(job, "delivered")
    await eventually(lambda: _is_gone(harness, env.id))
    objects = await harness.js.object_store("ELEMTA_BODIES")
    assert [o.name for o in await _list_or_empty(objects)] == []


async def test_deferred_job_waits_in_the_deferred_stream_then_returns_with_attempt_2(
    harness: QueueHarness, clock: FakeClock
) -> None:
    await harness.start_queue(clock, retry_schedule=[300.0, 900.0], lifetime=86400.0)
    env, seq = await harness.store(["b1@a.test", "b2@a.test"])
    [(job, _)] = await harness.take_jobs(1)
    await harness.report(job, "deferred", 451, "4.3.0 try later", "4.3.0", only=["b2@a.test"])
    assert await eventually(lambda: _deferred_is(harness, 1))
    clock.advance(299)  # not due yet: the job stays parked
    assert await harness.no_more_jobs(0.3)
    assert await harness.count(DELIVERY_STREAM) == 0

    clock.advance(2)  # five minutes after the failure, as the schedule says
    [(retry, headers)] = await harness.take_jobs(1, within=5)
    assert retry.attempt == 2
    assert retry.recipients == ["b2@a.test"]
    assert retry.msg_seq == (await harness.kept(env.id))[0]
    assert headers["Nats-Msg-Id"].endswith(".2")
    assert await eventually(lambda: _deferred_is(harness, 0))
    st = await harness.state(env.id)
    assert st is not None
    assert st["dests"]["mx:a.test"]["attempt"] == 2
    assert st["dests"]["mx:a.test"]["last"]["code"] == 451
    assert st["final"] == {"b1@a.test": "delivered"}
    events = await harness.events(env.id)
    deferred = next(e for e in events if e["type"] == "deferred")
    assert deferred["recipient"] == "b2@a.test"
    assert deferred["attempt"] == 2

    await harness.report(retry, "delivered")
    await eventually(lambda: _is_gone(harness, env.id))


async def test_redelivered_outcome_does_not_schedule_twice(harness: QueueHarness) -> None:
    await harness.start_queue(retry_schedule=[0.4])
    env, _ = await harness.store(["b@a.test"])
    [(job, _)] = await harness.take_jobs(1)
    await harness.report(job, "deferred", 421, "4.4.2 timeout")
    await harness.report(job, "deferred", 421, "4.4.2 timeout")
    [(retry, _)] = await harness.take_jobs(1)
    assert retry.attempt == 2
    assert await harness.no_more_jobs(0.8)
    events = await harness.events(env.id)
    assert [e["type"] for e in events].count("deferred") == 1


async def test_failed_recipient_is_returned_to_the_sender_in_a_dsn(harness: QueueHarness) -> None:
    await harness.start_queue()
    body = (
        b"From: alice@sender.test\r\nTo: nobody@a.test\r\nSubject: Quarterly figures\r\n"
        b"Message-ID: <q3@sender.test>\r\n\r\nsecret body text\r\n"
    )
    env, seq = await harness.store(["nobody@a.test", "ok@a.test"], body=body)
    [(job, _)] = await harness.take_jobs(1)
    await harness.report(
        job,
        "failed",
        550,
        "5.1.1 <nobody@a.test>: Recipient address rejected",
        "5.1.1",
        only=["nobody@a.test"],
        host="mx1.a.test",
    )
    # The original is finished and removed; the DSN is a new stored message.
    await eventually(lambda: _is_gone(harness, env.id))
    [(benv, data)] = await eventually(lambda: _bounces(harness, {seq}))
    assert benv.sender == ""
    assert benv.recipients == ["alice@sender.test"]
    assert benv.is_bounce
    assert b"\r\n" in data and b"\n" not in data.replace(b"\r\n", b"")

    dsn = _parse(data)
    assert dsn.get_content_type() == "multipart/report"
    assert dsn.get_param("report-type") == "delivery-status"
    assert dsn["To"] == "alice@sender.test"
    assert dsn["From"].addresses[0].addr_spec == "MAILER-DAEMON@mx.queue.test"
    assert dsn["Subject"] == "Undelivered Mail Returned to Sender"
    assert dsn["Auto-Submitted"] == "auto-replied"
    assert dsn["Message-ID"] and dsn["Date"]
    human, _, headers = dsn.iter_parts()
    assert "nobody@a.test" in human.get_content()
    assert "host mx1.a.test said: 550" in human.get_content()
    per_message, per_rcpt = _report_blocks(dsn)
    assert per_message["Reporting-MTA"] == "dns; mx.queue.test"
    assert "Arrival-Date" in per_message
    assert per_rcpt["Final-Recipient"] == "rfc822; nobody@a.test"
    assert per_rcpt["Action"] == "failed"
    assert per_rcpt["Status"] == "5.1.1"
    assert per_rcpt["Remote-MTA"] == "dns; mx1.a.test"
    assert per_rcpt["Diagnostic-Code"].startswith("smtp; 550 5.1.1")
    assert headers.get_content_type() == "text/rfc822-headers"
    returned = headers.get_payload(decode=True)
    assert b"Subject: Quarterly figures" in returned
    assert b"secret body text" not in data

    # The bounce itself is queued for delivery to the sender, with the null sender.
    [(bjob, _)] = await harness.take_jobs(1)
    assert bjob.sender == ""
    assert bjob.recipients == ["alice@sender.test"]
    assert bjob.dest == "mx:sender.test"
    types = await harness.event_types(env.id)
    assert "bounced" in types and "done" in types


async def test_failed_outcome_redelivered_bounces_only_once(harness: QueueHarness) -> None:
    await harness.start_queue()
    env, seq = await harness.store(["nobody@a.test", "later@a.test"])
    [(job, _)] = await harness.take_jobs(1)
    await harness.report(job, "failed", 550, "5.1.1 unknown", "5.1.1", only=["nobody@a.test"])
    await harness.report(job, "failed", 550, "5.1.1 unknown", "5.1.1", only=["nobody@a.test"])
    await eventually(lambda: _is_gone(harness, env.id))
    [(benv, _)] = await eventually(lambda: _bounces(harness, {seq}))
    await harness.take_jobs(1)  # the bounce's own job
    assert await harness.no_more_jobs(0.5)
    assert len(await _bounces(harness, {seq})) == 1


async def test_a_bounce_that_fails_is_not_bounced_again(harness: QueueHarness) -> None:
    await harness.start_queue()
    env, _ = await harness.store(["alice@sender.test"], sender="", is_bounce=True)
    [(job, _)] = await harness.take_jobs(1)
    assert job.sender == ""
    await harness.report(job, "failed", 550, "5.1.1 no such user", "5.1.1")
    await eventually(lambda: _is_gone(harness, env.id))
    types = await eventually(lambda: _types_with(harness, env.id, "done"))
    assert "failed" in types
    assert "bounced" not in types
    assert await harness.count(MESSAGES_STREAM) == 0
    assert await harness.no_more_jobs(0.5)


async def test_retry_after_the_lifetime_expires_with_status_4_4_7(
    harness: QueueHarness, clock: FakeClock
) -> None:
    await harness.start_queue(clock, lifetime=5 * 86400.0, retry_schedule=[4 * 3600.0])
    clock.advance(5 * 86400 - 3600)  # an hour of lifetime left, the next retry in four
    env, seq = await harness.store(["slow@a.test"])
    [(job, _)] = await harness.take_jobs(1)
    await harness.report(job, "deferred", 451, "4.7.1 greylisted, come back later", "4.7.1")
    await eventually(lambda: _is_gone(harness, env.id))
    [(benv, data)] = await eventually(lambda: _bounces(harness, {seq}))
    assert benv.recipients == ["alice@sender.test"]
    dsn = _parse(data)
    _, per_rcpt = _report_blocks(dsn)
    assert per_rcpt["Status"] == "4.4.7"
    assert per_rcpt["Action"] == "failed"
    assert per_rcpt["Final-Recipient"] == "rfc822; slow@a.test"
    assert "451 4.7.1 greylisted" in per_rcpt["Diagnostic-Code"]
    human = next(dsn.iter_parts()).get_content()
    assert "delivery time expired" in human
    assert "greylisted" in human
    assert await harness.deferred_count() == 0
    assert "expired" in await harness.event_types(env.id)


async def test_recipient_without_a_result_is_retried(harness: QueueHarness) -> None:
    await harness.start_queue(retry_schedule=[0.3])
    env, _ = await harness.store(["a1@a.test", "a2@a.test"])
    [(job, _)] = await harness.take_jobs(1)
    outcome = Outcome(
        id=job.id,
        dest=job.dest,
        domain=job.domain,
        attempt=1,
        host="mx1.a.test",
        results=[RecipientResult("a1@a.test", "delivered", 250, "2.0.0", "Ok")],
    )
    await harness.js.publish(f"elemta.outcome.{job.id}", outcome.encode())
    [(retry, _)] = await harness.take_jobs(1)
    assert retry.recipients == ["a2@a.test"]
    assert retry.attempt == 2


async def _state_where(harness: QueueHarness, qid: str, pred):  # type: ignore[no-untyped-def]
    st = await harness.state(qid)
    return st if st is not None and pred(st) == "done" else None


async def _is_gone(harness: QueueHarness, qid: str) -> bool:
    return await harness.state(qid) is None and "done" in await harness.event_types(qid)


async def _types_with(harness: QueueHarness, qid: str, wanted: str) -> list[str] | None:
    types = await harness.event_types(qid)
    return types if wanted in types else None


async def _deferred_is(harness: QueueHarness, n: int) -> bool:
    return await harness.deferred_count() == n


async def _list_or_empty(objects):  # type: ignore[no-untyped-def]
    try:
        return [o for o in await objects.list() if not o.deleted]
    except Exception:
        return []
