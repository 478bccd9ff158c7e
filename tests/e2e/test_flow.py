"""A message travels ingress -> JetStream -> queue -> delivery, through real processes."""

from __future__ import annotations

import email
import email.policy
import time

from support.smtpsink import SmtpSink

MESSAGE = (
    "From: Alice <alice@client.test>\r\n"
    "To: Bob <bob@local.test>\r\n"
    "Subject: hello\r\n"
    "Message-ID: <m1@client.test>\r\n"
    "\r\n"
    "Hello Bob.\r\n"
    ".A line that started with a dot.\r\n"
)


def test_mail_to_a_local_domain_lands_in_the_maildir(stack_factory, wait_for_maildir):
    stack = stack_factory()
    code, reply = stack.send("alice@client.test", ["bob@local.test"], MESSAGE)
    assert code == 250 and b"queued as" in reply
    (msg,) = wait_for_maildir(stack.workdir / "var" / "mail", "bob@local.test")
    assert msg["Subject"] == "hello"
    assert msg["Return-Path"] == "<alice@client.test>"
    assert "by mx.elemta.test" in msg["Received"]
    assert ".A line that started with a dot." in msg.get_content()


def test_a_transport_route_relays_to_its_host_with_envelope_and_body(stack_factory, make_sink):
    sink: SmtpSink = make_sink()
    stack = stack_factory(
        {"transport": {"routes": {"relay.test": f"smtp:[127.0.0.1]:{sink.port}"}}}
    )
    body = MESSAGE.replace("bob@local.test", "carol@relay.test")
    code, _ = stack.send("alice@client.test", ["carol@relay.test", "dave@relay.test"], body)
    assert code == 250
    (got,) = sink.wait_for(1)
    assert got.mail_from == "alice@client.test"
    assert sorted(got.rcpt_tos) == ["carol@relay.test", "dave@relay.test"]
    parsed = email.message_from_bytes(got.content, policy=email.policy.default)
    assert parsed["Message-ID"] == "<m1@client.test>"
    assert b"Hello Bob.\r\n.A line that started with a dot.\r\n" in got.content


def test_mail_is_delivered_to_the_mx_found_in_dns(stack_factory, make_sink, dns_server):
    sink: SmtpSink = make_sink()
    dns_server.add_zone(
        "remote.test.",
        "@ 300 IN MX 20 backup.remote.test.\n"
        "@ 300 IN MX 10 mx1.remote.test.\n"
        "mx1 300 IN A 127.0.0.1\n"
        "backup 300 IN A 127.0.0.2\n",
    )
    stack = stack_factory({"delivery": {"smtp_port": sink.port}})
    code, _ = stack.send("alice@client.test", ["erin@remote.test"], MESSAGE)
    assert code == 250
    (got,) = sink.wait_for(1)
    assert got.rcpt_tos == ["erin@remote.test"]
    assert got.content.endswith(b".A line that started with a dot.\r\n")


def test_a_temporary_failure_is_retried_on_schedule_and_then_delivered(stack_factory, make_sink):
    sink: SmtpSink = make_sink()
    sink.rcpt_replies["frank@relay.test"] = ["451 4.3.0 Try again later", "451 4.3.0 Still busy"]
    stack = stack_factory(
        {
            "transport": {"routes": {"relay.test": f"smtp:[127.0.0.1]:{sink.port}"}},
            "queue": {"retry_schedule": [1.0, 2.0], "retry_jitter": 0.0},
        }
    )
    started = time.monotonic()
    assert stack.send("alice@client.test", ["frank@relay.test"], MESSAGE)[0] == 250
    (got,) = sink.wait_for(1, timeout=30)
    elapsed = time.monotonic() - started
    assert got.rcpt_tos == ["frank@relay.test"]
    # two deferrals: 1 s then 2 s, per the schedule
    assert elapsed >= 3.0, elapsed
    assert sink.rcpt_replies["frank@relay.test"] == []


def test_a_permanent_failure_bounces_a_dsn_to_the_sender(
    stack_factory, make_sink, wait_for_maildir
):
    sink: SmtpSink = make_sink()
    sink.rcpt_replies["nobody@relay.test"] = "550 5.1.1 <nobody@relay.test>: user unknown"
    stack = stack_factory(
        {"transport": {"routes": {"relay.test": f"smtp:[127.0.0.1]:{sink.port}"}}}
    )
    assert stack.send("bob@local.test", ["nobody@relay.test"], MESSAGE)[0] == 250
    (dsn,) = wait_for_maildir(stack.workdir / "var" / "mail", "bob@local.test")
    assert dsn["Return-Path"] == "<>"
    assert dsn.get_content_type() == "multipart/report"
    assert dsn.get_param("report-type") == "delivery-status"
    status = next(p for p in dsn.walk() if p.get_content_type() == "message/delivery-status")
    text = status.as_string()
    assert "Final-Recipient: rfc822; nobody@relay.test" in text
    assert "Status: 5.1.1" in text
    assert "user unknown" in text
    assert sink.messages == []


def test_a_message_that_outlives_the_queue_lifetime_bounces(
    stack_factory, make_sink, wait_for_maildir
):
    sink: SmtpSink = make_sink()
    sink.rcpt_replies["slow@relay.test"] = "451 4.4.5 Busy forever"
    stack = stack_factory(
        {
            "transport": {"routes": {"relay.test": f"smtp:[127.0.0.1]:{sink.port}"}},
            "queue": {"retry_schedule": [0.5], "retry_jitter": 0.0, "lifetime": 2.0},
        }
    )
    assert stack.send("bob@local.test", ["slow@relay.test"], MESSAGE)[0] == 250
    (dsn,) = wait_for_maildir(stack.workdir / "var" / "mail", "bob@local.test", timeout=30)
    status = next(p for p in dsn.walk() if p.get_content_type() == "message/delivery-status")
    assert "Status: 4.4.7" in status.as_string()
    assert "Busy forever" in status.as_string()
    assert sink.messages == []


def test_a_bounce_that_cannot_be_delivered_is_not_bounced_again(stack_factory, make_sink):
    sink: SmtpSink = make_sink()
    # Both the message and its bounce go to the sink, which refuses both.
    sink.rcpt_replies["nobody@relay.test"] = "550 5.1.1 user unknown"
    sink.rcpt_replies["sender@relay.test"] = "550 5.1.1 sender gone too"
    stack = stack_factory(
        {"transport": {"routes": {"relay.test": f"smtp:[127.0.0.1]:{sink.port}"}}}
    )
    assert stack.send("sender@relay.test", ["nobody@relay.test"], MESSAGE)[0] == 250
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and len(sink.rcpt_log) < 2:
        time.sleep(0.1)
    time.sleep(3)  # room for a bounce of the bounce, which must not come
    assert [(f, r) for f, r, _ in sink.rcpt_log] == [
        ("sender@relay.test", "nobody@relay.test"),
        ("", "sender@relay.test"),
    ]
    assert sink.messages == []
