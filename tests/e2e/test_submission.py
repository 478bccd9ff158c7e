"""Submission through the running services: AUTH PLAIN and LOGIN after STARTTLS
(587-style) and on implicit TLS (465-style), relay for the authenticated owner of
the sender, and every refusal: AUTH before TLS, no AUTH, a foreign sender, wrong
passwords up to a lockout that holds across two ingress processes."""

from __future__ import annotations

import base64
import email
import email.policy
import json
import smtplib

import pytest

from support.dnsserver import free_port
from support.mua import PASSWORD, add_user, plain, tls_client
from support.smtpsink import SmtpSink
from support.stack import ServiceProcess, Stack

MESSAGE = "From: alice@local.test\r\nTo: dan@remote.test\r\nSubject: hi\r\n\r\nhello\r\n"


@pytest.fixture
def relay_stack(stack_factory, make_sink):  # type: ignore[no-untyped-def]
    sink: SmtpSink = make_sink()
    stack = stack_factory(
        {
            "server": {"trusted_networks": ["127.0.0.0/8"]},
            "ingress": {"auth_failure_delay": 0.0},
            "users": {"lockout_failures": 3},
            "transport": {"routes": {"remote.test": f"smtp:[127.0.0.1]:{sink.port}"}},
        }
    )
    add_user(stack, "alice@local.test", "@alias.test")
    return stack, sink


def submission(stack: Stack) -> smtplib.SMTP:
    return smtplib.SMTP("127.0.0.1", stack.submission_port, local_hostname="mua.test", timeout=20)


def submissions(stack: Stack) -> smtplib.SMTP_SSL:
    return smtplib.SMTP_SSL(
        "127.0.0.1", stack.submissions_port, local_hostname="mua.test", timeout=20,
        context=tls_client(),
    )  # fmt: skip


def test_auth_plain_after_starttls_relays_and_marks_the_message(relay_stack):
    stack, sink = relay_stack
    with submission(stack) as s:
        s.ehlo()
        assert "auth" not in s.esmtp_features  # never offered in the clear
        code, text = s.docmd("AUTH", "PLAIN " + plain("alice@local.test", PASSWORD))
        assert (code, text[:6]) == (538, b"5.7.11")
        s.starttls(context=tls_client())
        s.ehlo()
        assert s.esmtp_features["auth"].split() == ["PLAIN", "LOGIN"]
        code, text = s.docmd("AUTH", "PLAIN " + plain("alice@local.test", PASSWORD))
        assert (code, text[:5]) == (235, b"2.7.0")
        assert s.mail("alice@local.test")[0] == 250
        assert s.rcpt("dan@remote.test")[0] == 250  # relay: authenticated
        assert s.data(MESSAGE)[0] == 250
    got = sink.wait_for(1)[0]
    msg = email.message_from_bytes(got.content, policy=email.policy.default)
    received = msg.get_all("Received")[-1]
    assert "with ESMTPSA" in received
    assert "alice" not in " ".join(msg.get_all("Received"))  # the login is not exposed
    assert msg["Message-ID"].endswith("@mx.elemta.test>") and msg["Date"]


def test_auth_login_on_implicit_tls_relays_for_an_owned_domain(relay_stack):
    stack, sink = relay_stack
    with submissions(stack) as s:
        s.ehlo()
        assert "STARTTLS" not in s.esmtp_features and "starttls" not in s.esmtp_features
        assert "LOGIN" in s.esmtp_features["auth"]
        code, text = s.docmd("AUTH", "LOGIN")
        assert (code, base64.b64decode(text)) == (334, b"Username:")
        code, text = s.docmd(base64.b64encode(b"alice@local.test").decode())
        assert (code, base64.b64decode(text)) == (334, b"Password:")
        code, text = s.docmd(base64.b64encode(PASSWORD.encode()).decode())
        assert (code, text[:5]) == (235, b"2.7.0")
        assert s.mail("anyone@alias.test")[0] == 250  # @alias.test is alice's
        assert s.rcpt("dan@remote.test")[0] == 250
        assert s.data(MESSAGE.replace("alice@local.test", "anyone@alias.test"))[0] == 250
    got = sink.wait_for(1)[0]
    assert got.mail_from == "anyone@alias.test"
    assert b"with ESMTPSA" in got.content


def test_submission_refuses_mail_without_auth_even_from_trusted_networks(relay_stack):
    stack, _ = relay_stack
    with submission(stack) as s:
        s.starttls(context=tls_client())
        s.ehlo()
        code, text = s.mail("alice@local.test")
        assert (code, text[:5]) == (530, b"5.7.0")
    with submissions(stack) as s:
        s.ehlo()
        assert s.mail("alice@local.test")[0] == 530


def test_a_sender_the_login_does_not_own_is_refused(relay_stack):
    stack, _ = relay_stack
    with submission(stack) as s:
        s.starttls(context=tls_client())
        s.ehlo()
        assert s.docmd("AUTH", "PLAIN " + plain("alice@local.test", PASSWORD))[0] == 235
        code, text = s.mail("bob@local.test")
        assert (code, text[:5]) == (553, b"5.7.1")
        assert s.mail("alice@local.test")[0] == 250


def test_wrong_passwords_lock_out_across_two_ingress_processes(relay_stack):
    stack, _ = relay_stack
    other_sub = free_port()
    env = stack.env(
        ELEMTA_INGRESS_LISTEN=f"127.0.0.1:{free_port()}",
        ELEMTA_INGRESS_HTTP_LISTEN=f"127.0.0.1:{(health := free_port())}",
        ELEMTA_INGRESS_LISTENERS=json.dumps(
            [{"address": f"127.0.0.1:{other_sub}", "role": "submission"}]
        ),
    )
    second = ServiceProcess(
        "ingress", stack.config_path, stack.workdir / "ingress-second.log", health, env
    )
    second.start()
    try:
        second.wait_ready()
        with submission(stack) as s:  # the first ingress process
            s.starttls(context=tls_client())
            s.ehlo()
            for _ in range(2):
                code, text = s.docmd("AUTH", "PLAIN " + plain("alice@local.test", "wrong"))
                assert (code, text[:5]) == (535, b"5.7.8")
        with submission(stack) as s:
            s.starttls(context=tls_client())
            s.ehlo()
            assert s.docmd("AUTH", "PLAIN " + plain("alice@local.test", "wrong"))[0] == 535
        # the second process, a new connection, the right password: still locked out
        with smtplib.SMTP("127.0.0.1", other_sub, local_hostname="mua.test", timeout=20) as s:
            s.starttls(context=tls_client())
            s.ehlo()
            code, text = s.docmd("AUTH", "PLAIN " + plain("alice@local.test", PASSWORD))
            assert (code, text[:5]) == (454, b"4.7.0")
    finally:
        second.stop()
    logs = stack.logs() + (stack.workdir / "ingress-second.log").read_text()
    assert PASSWORD not in logs


def test_the_mta_port_offers_no_auth(relay_stack):
    stack, _ = relay_stack
    with stack.smtp() as s:
        s.starttls(context=tls_client())
        s.ehlo()
        assert "auth" not in s.esmtp_features
        assert s.docmd("AUTH", "PLAIN " + plain("alice@local.test", PASSWORD))[0] == 503
