"""DSN (RFC 3461) end to end, through real processes: ingress takes the parameters, the queue
sends the notices the sender asked for, delivery passes the parameters to a next hop with DSN."""

from __future__ import annotations

import smtplib
from email.message import EmailMessage, Message

from support.dsnsink import DsnSink
from support.smtpsink import SmtpSink

MESSAGE = (
    "From: Bob <bob@local.test>\r\n"
    "To: Carol <carol@relay.test>\r\n"
    "Subject: figures\r\n"
    "Message-ID: <dsn1@local.test>\r\n"
    "\r\n"
    "The secret figures are 42.\r\n"
)
MAILDIR = "var/mail"


def _send(stack, mail_options: list[str], rcpts: dict[str, list[str]]) -> None:  # type: ignore[no-untyped-def]
    with stack.smtp() as s:
        s.ehlo()
        assert s.has_extn("dsn")
        assert s.mail("bob@local.test", mail_options)[0] == 250
        for rcpt, options in rcpts.items():
            assert s.rcpt(rcpt, options)[0] == 250
        assert s.data(MESSAGE)[0] == 250


def _blocks(dsn: EmailMessage) -> tuple[Message, list[Message]]:
    part = next(p for p in dsn.walk() if p.get_content_type() == "message/delivery-status")
    blocks = part.get_payload()
    assert isinstance(blocks, list)
    return blocks[0], blocks[1:]


def _marker(stack, wait_for_maildir, count: int) -> list[EmailMessage]:  # type: ignore[no-untyped-def]
    """Mail bob a marker and wait for it: whatever the queue was to send bob before is there."""
    with stack.smtp() as s:
        s.sendmail("x@local.test", ["bob@local.test"], "Subject: marker\r\n\r\nm\r\n")
    found = wait_for_maildir(stack.workdir / MAILDIR, "bob@local.test", count)
    assert found[-1]["Subject"] == "marker" or any(m["Subject"] == "marker" for m in found)
    return [m for m in found if m["Subject"] != "marker"]


def test_notify_success_to_a_next_hop_without_dsn_gives_a_relayed_notice(
    stack_factory, make_sink, wait_for_maildir
):
    sink: SmtpSink = make_sink()
    stack = stack_factory(
        {"transport": {"routes": {"relay.test": f"smtp:[127.0.0.1]:{sink.port}"}}}
    )
    _send(
        stack,
        ["RET=HDRS", "ENVID=batch+2B7"],
        {"carol@relay.test": ["NOTIFY=SUCCESS", "ORCPT=rfc822;carol+2Bold@relay.test"]},
    )
    sink.wait_for(1)
    (dsn,) = wait_for_maildir(stack.workdir / MAILDIR, "bob@local.test")
    assert dsn["Return-Path"] == "<>"
    assert dsn["Subject"] == "Successful Mail Delivery Report"
    per_message, [block] = _blocks(dsn)
    assert per_message["Original-Envelope-Id"] == "batch+7"
    assert block["Original-Recipient"] == "rfc822; carol+old@relay.test"
    assert block["Action"] == "relayed"
    assert "The secret figures" not in dsn.as_string()


def test_a_next_hop_with_dsn_gets_the_parameters_and_the_success_notice_is_left_to_it(
    stack_factory, wait_for_maildir
):
    sink = DsnSink().start()
    try:
        stack = stack_factory(
            {"transport": {"routes": {"relay.test": f"smtp:[127.0.0.1]:{sink.port}"}}}
        )
        _send(
            stack,
            ["RET=FULL", "ENVID=E42"],
            {"carol@relay.test": ["NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;c@old.test"]},
        )
        (got,) = sink.wait_for(1)
        assert got.rcpt_tos == ["carol@relay.test"]
        assert sink.mail_params == [["RET=FULL", "ENVID=E42"]]
        assert sink.rcpt_params == [["NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;c@old.test"]]
        assert _marker(stack, wait_for_maildir, 1) == []
    finally:
        sink.stop()


def test_notify_never_sends_no_bounce_and_ret_full_returns_the_message(
    stack_factory, make_sink, wait_for_maildir
):
    sink: SmtpSink = make_sink()
    sink.rcpt_replies["never@relay.test"] = "550 5.1.1 user unknown"
    sink.rcpt_replies["full@relay.test"] = "550 5.1.1 user unknown"
    stack = stack_factory(
        {"transport": {"routes": {"relay.test": f"smtp:[127.0.0.1]:{sink.port}"}}}
    )
    _send(stack, [], {"never@relay.test": ["NOTIFY=NEVER"]})
    _send(stack, ["RET=FULL"], {"full@relay.test": []})
    (bounce,) = wait_for_maildir(stack.workdir / MAILDIR, "bob@local.test")
    _, [block] = _blocks(bounce)
    assert block["Final-Recipient"] == "rfc822; full@relay.test"
    assert any(p.get_content_type() == "message/rfc822" for p in bounce.walk())
    assert "The secret figures are 42." in bounce.as_string()
    assert len(_marker(stack, wait_for_maildir, 2)) == 1  # still only the one bounce


def test_ret_hdrs_returns_only_the_headers(stack_factory, make_sink, wait_for_maildir):
    sink: SmtpSink = make_sink()
    sink.rcpt_replies["gone@relay.test"] = "550 5.1.1 user unknown"
    stack = stack_factory(
        {"transport": {"routes": {"relay.test": f"smtp:[127.0.0.1]:{sink.port}"}}}
    )
    _send(stack, ["RET=HDRS", "ENVID=H1"], {"gone@relay.test": ["ORCPT=rfc822;g@old.test"]})
    (bounce,) = wait_for_maildir(stack.workdir / MAILDIR, "bob@local.test")
    kinds = [p.get_content_type() for p in bounce.walk()]
    assert "text/rfc822-headers" in kinds and "message/rfc822" not in kinds
    assert "Subject: figures" in bounce.as_string()
    assert "The secret figures" not in bounce.as_string()
    per_message, [block] = _blocks(bounce)
    assert per_message["Original-Envelope-Id"] == "H1"
    assert block["Original-Recipient"] == "rfc822; g@old.test"


def test_a_message_deferred_past_the_warning_time_gets_one_delay_warning(
    stack_factory, make_sink, wait_for_maildir
):
    sink: SmtpSink = make_sink()
    sink.rcpt_replies["slow@relay.test"] = ["451 4.4.1 busy"] * 4
    stack = stack_factory(
        {
            "transport": {"routes": {"relay.test": f"smtp:[127.0.0.1]:{sink.port}"}},
            "queue": {"retry_schedule": [0.5], "retry_jitter": 0.0, "delay_warning_time": 0.2},
        }
    )
    _send(stack, ["ENVID=D1"], {"slow@relay.test": ["NOTIFY=DELAY,FAILURE"]})
    (got,) = sink.wait_for(1, timeout=30)
    assert got.rcpt_tos == ["slow@relay.test"]
    notices = _marker(stack, wait_for_maildir, 2)
    assert [n["Subject"] for n in notices] == ["Delayed Mail (still being retried)"]
    per_message, [block] = _blocks(notices[0])
    assert per_message["Original-Envelope-Id"] == "D1"
    assert (block["Action"], block["Status"]) == ("delayed", "4.4.1")


def test_a_malformed_ret_is_refused_and_mail_without_dsn_still_flows(stack_factory):
    stack = stack_factory()
    with stack.smtp() as s:
        s.ehlo()
        assert s.mail("bob@local.test", ["RET=BOGUS"])[0] == 501
        assert s.rcpt("carol@local.test")[0] == 503
    try:
        stack.send("bob@local.test", ["carol@local.test"], MESSAGE)
    except smtplib.SMTPException as exc:  # pragma: no cover - a failure explains itself
        raise AssertionError(exc) from None
