"""Policy at MAIL FROM and RCPT TO: greylisting, rate limits and DNSBL, end to end."""

from __future__ import annotations

import time

from support.smtpsink import SmtpSink

UNTRUSTED = {"trusted_networks": ["10.0.0.0/8"]}
MESSAGE = "From: a@client.test\r\nTo: bob@local.test\r\nSubject: hi\r\n\r\nhello\r\n"


def test_a_first_attempt_is_greylisted_and_the_retry_after_the_delay_is_accepted(
    stack_factory, wait_for_maildir
):
    stack = stack_factory(
        {"server": UNTRUSTED, "policy": {"greylist": True, "greylist_delay": 1.0}}
    )
    with stack.smtp() as s:
        s.ehlo()
        assert s.mail("a@client.test")[0] == 250
        code, text = s.rcpt("bob@local.test")
        assert code == 451 and text.startswith(b"4.7.1"), (code, text)
        # too early: still greylisted
        code, _ = s.rcpt("bob@local.test")
        assert code == 451
    time.sleep(1.2)
    assert stack.send("a@client.test", ["bob@local.test"], MESSAGE)[0] == 250
    wait_for_maildir(stack.workdir / "var" / "mail", "bob@local.test")


def test_mail_from_our_own_networks_is_never_greylisted(stack_factory, wait_for_maildir):
    stack = stack_factory({"policy": {"greylist": True, "greylist_delay": 60.0}})
    assert stack.send("a@client.test", ["bob@local.test"], MESSAGE)[0] == 250
    wait_for_maildir(stack.workdir / "var" / "mail", "bob@local.test")


def test_a_client_on_a_dnsbl_is_refused_at_mail_from(stack_factory, dns_server):
    dns_server.add("1.0.0.127.bl.test", "A", "127.0.0.2")
    stack = stack_factory({"server": UNTRUSTED, "policy": {"dnsbl_ip_zones": ["bl.test"]}})
    with stack.smtp() as s:
        s.ehlo()
        code, text = s.mail("a@client.test")
    assert code == 554 and text.startswith(b"5.7.1") and b"bl.test" in text


def test_a_sender_over_its_rate_limit_is_told_to_come_back_later(stack_factory, make_sink):
    sink: SmtpSink = make_sink()
    stack = stack_factory(
        {
            "server": {**UNTRUSTED, "relay_domains": ["gateway.test"]},
            "policy": {"rate_limit_per_sender": 2, "rate_limit_per_sender_window": 600.0},
            "transport": {"routes": {"gateway.test": f"smtp:[127.0.0.1]:{sink.port}"}},
        }
    )
    for _ in range(2):
        assert stack.send("busy@client.test", ["in@gateway.test"], MESSAGE)[0] == 250
    with stack.smtp() as s:
        s.ehlo()
        code, text = s.mail("busy@client.test")
        assert code == 450 and text.startswith(b"4.7.1"), (code, text)
        assert s.mail("calm@client.test")[0] == 250
    sink.wait_for(2)
