"""DSN notices (RFC 3461) from the queue: success, one delay warning, NOTIFY=NEVER, RET, ORCPT, ENVID."""

from __future__ import annotations

import email
import email.policy
from email.message import EmailMessage, Message

from queue_harness import QueueHarness, eventually

from support.clock import FakeClock

BODY = (
    b"From: alice@sender.test\r\nTo: b@a.test\r\nSubject: Quarterly figures\r\n"
    b"Message-ID: <q1@sender.test>\r\n\r\nThe secret figures are 42.\r\n"
)


async def _notices(harness: QueueHarness, seq: int, count: int = 1) -> list[EmailMessage]:
    async def found():  # type: ignore[no-untyped-def]
        others = [s for s in await harness.stored() if s[0] != seq and s[1].is_bounce]
        return others if len(others) >= count else None

    out = []
    for _, env, data in await eventually(found):
        assert env.sender == "" and env.recipients == ["alice@sender.test"]
        msg = email.message_from_bytes(data, policy=email.policy.default)
        assert isinstance(msg, EmailMessage)
        out.append(msg)
    return out


def _report(dsn: EmailMessage) -> tuple[Message, list[Message]]:
    part = next(p for p in dsn.walk() if p.get_content_type() == "message/delivery-status")
    blocks = part.get_payload()
    assert isinstance(blocks, list)
    return blocks[0], blocks[1:]


async def test_notify_success_gives_a_relayed_notice_with_orcpt_and_envid(
    harness: QueueHarness,
) -> None:
    await harness.start_queue()
    env, seq = await harness.store(
        ["b@a.test", "c@a.test"],
        body=BODY,
        dsn_envid="ENV+2B1",
        dsn_notify={"b@a.test": "SUCCESS"},
        dsn_orcpt={"b@a.test": "rfc822;old+2Bb@a.test"},
    )
    [(job, _)] = await harness.take_jobs(1)
    assert job.dsn_notify == {"b@a.test": "SUCCESS"} and job.dsn_envid == "ENV+2B1"
    await harness.report(job, "delivered", 250, "2.0.0 Ok", "2.0.0")
    [dsn] = await _notices(harness, seq)
    assert dsn["Subject"] == "Successful Mail Delivery Report"
    per_message, [block] = _report(dsn)
    assert per_message["Original-Envelope-Id"] == "ENV+1"
    assert block["Original-Recipient"] == "rfc822; old+b@a.test"
    assert block["Final-Recipient"] == "rfc822; b@a.test"
    assert block["Action"] == "relayed"  # the test's next hop did not take DSN
    assert block["Status"] == "2.0.0"
    assert "The secret figures" not in dsn.as_string()
    events = await harness.event_types(env.id)
    assert "notice" in events


async def test_no_success_notice_when_the_next_hop_took_the_dsn_parameters(
    harness: QueueHarness,
) -> None:
    await harness.start_queue()
    env, seq = await harness.store(["b@a.test"], dsn_notify={"b@a.test": "SUCCESS"})
    [(job, _)] = await harness.take_jobs(1)
    await harness.report(job, "delivered", dsn_passed=True)
    await eventually(lambda: _gone(harness, env.id))
    assert [s for s in await harness.stored() if s[0] != seq] == []


async def test_local_delivery_with_notify_success_says_delivered(harness: QueueHarness) -> None:
    await harness.start_queue()
    _, seq = await harness.store(["bob@local.test"], dsn_notify={"bob@local.test": "SUCCESS"})
    [(job, _)] = await harness.take_jobs(1)
    assert job.route["kind"] == "local"
    await harness.report(job, "delivered", host="maildir")
    [dsn] = await _notices(harness, seq)
    _, [block] = _report(dsn)
    assert block["Action"] == "delivered"


async def test_notify_never_sends_no_failure_notice_and_the_default_does(
    harness: QueueHarness,
) -> None:
    await harness.start_queue()
    env, seq = await harness.store(
        ["never@a.test", "plain@a.test"], dsn_notify={"never@a.test": "NEVER"}
    )
    [(job, _)] = await harness.take_jobs(1)
    await harness.report(job, "failed", 550, "5.1.1 unknown", "5.1.1")
    [dsn] = await _notices(harness, seq)
    _, blocks = _report(dsn)
    assert [b["Final-Recipient"] for b in blocks] == ["rfc822; plain@a.test"]
    await eventually(lambda: _gone(harness, env.id))
    st_events = await harness.events(env.id)
    bounced = {e["recipient"] for e in st_events if e["type"] == "bounced"}
    assert bounced == {"never@a.test", "plain@a.test"}


async def test_ret_full_returns_the_whole_message_and_ret_hdrs_the_headers(
    harness: QueueHarness,
) -> None:
    await harness.start_queue()
    _, full_seq = await harness.store(["b@a.test"], body=BODY, dsn_ret="FULL")
    [(job, _)] = await harness.take_jobs(1)
    await harness.report(job, "failed", 550, "5.1.1 unknown", "5.1.1")
    [full] = await _notices(harness, full_seq)
    returned = [p for p in full.walk() if p.get_content_type() == "message/rfc822"]
    assert returned and "The secret figures are 42." in full.as_string()

    _, hdrs_seq = await harness.store(["c@a.test"], body=BODY, dsn_ret="HDRS")
    [(job, _)] = [j for j in await harness.take_jobs(2) if j[0].recipients == ["c@a.test"]]
    await harness.report(job, "failed", 550, "5.1.1 unknown", "5.1.1")
    [hdrs] = [
        n
        for n in await _notices(harness, hdrs_seq, 2)
        if _report(n)[1][0]["Final-Recipient"] == "rfc822; c@a.test"
    ]
    kinds = [p.get_content_type() for p in hdrs.walk()]
    assert "text/rfc822-headers" in kinds and "message/rfc822" not in kinds
    assert "Subject: Quarterly figures" in hdrs.as_string()
    assert "The secret figures" not in hdrs.as_string()


async def test_one_delay_warning_once_the_message_is_older_than_the_warning_time(
    harness: QueueHarness, clock: FakeClock
) -> None:
    await harness.start_queue(
        clock, retry_schedule=[600.0], delay_warning_time=3600.0, lifetime=86400.0
    )
    env, seq = await harness.store(
        ["slow@a.test"], dsn_notify={"slow@a.test": "DELAY,FAILURE"}, dsn_envid="E1"
    )
    [(job, _)] = await harness.take_jobs(1)
    await harness.report(job, "deferred", 451, "4.4.1 busy", "4.4.1")
    await eventually(lambda: _deferred(harness, 1))
    assert [s for s in await harness.stored() if s[0] != seq] == []  # too young to warn

    for attempt in range(3):  # three more deferrals, all past the warning time
        clock.advance(3601 if attempt == 0 else 601)
        job = await _job_of(harness, env.id)
        await harness.report(job, "deferred", 451, "4.4.1 busy", "4.4.1")
        nxt = job.attempt + 1
        await eventually(lambda n=nxt: _attempt_is(harness, env.id, n))  # type: ignore[misc]

    [dsn] = await _notices(harness, seq)
    assert dsn["Subject"] == "Delayed Mail (still being retried)"
    per_message, [block] = _report(dsn)
    assert per_message["Original-Envelope-Id"] == "E1"
    assert (block["Action"], block["Status"]) == ("delayed", "4.4.1")
    st = await harness.state(env.id)
    assert st is not None and st["delay_warned"] == ["slow@a.test"]


async def test_no_delay_warning_when_notify_leaves_delay_out(
    harness: QueueHarness, clock: FakeClock
) -> None:
    await harness.start_queue(
        clock, retry_schedule=[600.0], delay_warning_time=60.0, lifetime=86400.0
    )
    env, seq = await harness.store(["slow@a.test"], dsn_notify={"slow@a.test": "FAILURE"})
    [(job, _)] = await harness.take_jobs(1)
    clock.advance(120)
    await harness.report(job, "deferred", 451, "4.4.1 busy", "4.4.1")
    await eventually(lambda: _deferred(harness, 1))
    assert [s for s in await harness.stored() if s[0] != seq] == []


async def _job_of(harness: QueueHarness, qid: str):  # type: ignore[no-untyped-def]
    """The next job of message ``qid`` (jobs of the notices themselves are passed over)."""
    while True:
        [(job, _)] = await harness.take_jobs(1)
        if job.id == qid:
            return job


async def _gone(harness: QueueHarness, qid: str) -> bool:
    return await harness.state(qid) is None


async def _deferred(harness: QueueHarness, n: int) -> bool:
    return await harness.deferred_count() == n


async def _attempt_is(harness: QueueHarness, qid: str, attempt: int) -> bool:
    st = await harness.state(qid)
    return st is not None and st["dests"]["mx:a.test"]["attempt"] == attempt
