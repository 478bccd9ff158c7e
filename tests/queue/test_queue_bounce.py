"""DSN construction and the retry timing rules, without NATS."""

from __future__ import annotations

import email
import email.policy
from email.message import EmailMessage, Message

from queue_harness import QueueHarness, eventually, make_config

from elemta.common.envelope import RecipientResult
from elemta.common.replies import Status
from elemta.queue.bounce import Failure, build_dsn, failure_from_result, original_headers
from elemta.queue.dispatch import Dispatcher


def _dsn(failures: list[Failure], headers: bytes | None) -> EmailMessage:
    data = build_dsn(
        hostname="mx.test",
        to="alice@sender.test",
        original_id="QID",
        received_at=1_700_000_000.0,
        failures=failures,
        headers=headers,
    )
    assert b"\n" not in data.replace(b"\r\n", b"")
    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def test_status_comes_from_the_enhanced_code_or_the_reply_class() -> None:
    assert failure_from_result(
        RecipientResult("a@x", "failed", 550, "5.7.1", "no"), "h"
    ).status == ("5.7.1")
    assert failure_from_result(RecipientResult("a@x", "failed", 554, "", "no"), "h").status == (
        "5.0.0"
    )
    expired = failure_from_result(RecipientResult("a@x", "deferred", 451, "4.3.0", "x"), "h", True)
    assert expired.status == "4.4.7" and expired.expired


def test_local_failures_name_no_remote_mta_and_headers_part_is_optional() -> None:
    dsn = _dsn([Failure("bob@local.test", "5.1.1", 550, "5.1.1 no mailbox", "maildir")], None)
    parts = list(dsn.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "message/delivery-status"]
    _, block = parts[1].get_payload()  # type: ignore[str-unpack]
    assert isinstance(block, Message)
    assert "Remote-MTA" not in block
    assert block["Diagnostic-Code"] == "smtp; 550 5.1.1 no mailbox"
    assert block["Final-Recipient"] == "rfc822; bob@local.test"


def test_non_ascii_original_headers_are_returned_quoted_printable() -> None:
    head = original_headers("Subject: Grüße\r\nFrom: a@b\r\n\r\nbody\r\n".encode())
    assert head == "Subject: Grüße\r\nFrom: a@b\r\n".encode()
    dsn = _dsn([Failure("bob@x.test", "5.0.0", 550, "no", "mx.x.test")], head)
    part = list(dsn.iter_parts())[2]
    assert part.get_content_type() == "text/rfc822-headers"
    assert part["Content-Transfer-Encoding"] == "quoted-printable"
    payload = part.get_payload(decode=True)
    assert isinstance(payload, bytes) and "Grüße" in payload.decode()


def test_retry_delay_follows_the_schedule_and_repeats_the_last_entry() -> None:
    cfg = make_config("nats://127.0.0.1:1", retry_schedule=[10.0, 20.0], retry_jitter=0.0)
    d = Dispatcher(cfg, None, None, None, None, None, None)  # type: ignore[arg-type]
    assert [d.retry_delay(a) for a in (1, 2, 3, 9)] == [10.0, 20.0, 20.0, 20.0]
    jittered = Dispatcher(
        make_config("nats://127.0.0.1:1", retry_schedule=[100.0], retry_jitter=0.1),
        None,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        None,
    )
    delays = {jittered.retry_delay(1) for _ in range(50)}
    assert all(90.0 <= x <= 110.0 for x in delays) and len(delays) > 1


async def test_bounce_of_a_large_message_returns_headers_from_the_object_store(
    harness: QueueHarness,
) -> None:
    await harness.start_queue()
    body = b"Subject: Big attachment\r\nFrom: alice@sender.test\r\n\r\n" + b"x" * 1000 + b"\r\n"
    env, seq = await harness.store(["nobody@a.test"], body=body, body_object=True)
    [(job, _)] = await harness.take_jobs(1)
    await harness.report(job, "failed", 550, "5.1.1 unknown user", "5.1.1")
    [(_, benv, data)] = await eventually(
        lambda: _others(harness, seq),
    )
    assert benv.is_bounce
    assert b"Subject: Big attachment" in data
    assert b"xxxxxxxx" not in data


async def _others(harness: QueueHarness, seq: int):  # type: ignore[no-untyped-def]
    return [s for s in await harness.stored() if s[0] != seq]


def test_the_diagnostic_code_carries_the_servers_whole_reply() -> None:
    failure = failure_from_result(
        RecipientResult("bob@x.test", Status.FAILED, 550, "5.1.1", "no such user"), "mx.x.test"
    )
    _, block = list(_dsn([failure], None).iter_parts())[1].get_payload()  # type: ignore[misc]
    assert block["Diagnostic-Code"] == "smtp; 550 5.1.1 no such user"
    assert block["Status"] == "5.1.1"
