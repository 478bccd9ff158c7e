"""What the running system refuses at the door, with the reply a client sees."""

from __future__ import annotations

import smtplib
import socket

import pytest

from support.smtpsink import SmtpSink

MESSAGE = "From: a@client.test\r\nTo: b@local.test\r\nSubject: x\r\n\r\nbody\r\n"


def test_relaying_from_an_untrusted_network_is_refused(stack_factory, make_sink):
    sink: SmtpSink = make_sink()
    stack = stack_factory(
        {
            "server": {"trusted_networks": ["10.0.0.0/8"]},
            "transport": {"routes": {"relay.test": f"smtp:[127.0.0.1]:{sink.port}"}},
        }
    )
    with stack.smtp() as s:
        s.ehlo()
        assert s.mail("spammer@client.test")[0] == 250
        code, text = s.rcpt("victim@relay.test")
        assert code == 554
        assert text.startswith(b"5.7.1")
        # mail for our own domains is still welcome
        assert s.rcpt("bob@local.test")[0] == 250


def test_an_oversize_message_is_refused_and_nothing_is_delivered(stack_factory, wait_for_maildir):
    stack = stack_factory({"ingress": {"max_message_size": 20000}})
    with stack.smtp() as s:
        s.ehlo()
        s.mail("a@client.test")
        s.rcpt("b@local.test")
        code, text = s.data(MESSAGE + "x" * 30000 + "\r\n")
        assert code == 552 and text.startswith(b"5.3.4")
        # the session survives and the next message goes through
        s.rset()
        s.mail("a@client.test")
        s.rcpt("b@local.test")
        assert s.data(MESSAGE)[0] == 250
    msgs = wait_for_maildir(stack.workdir / "var" / "mail", "b@local.test")
    assert len(msgs) == 1 and len(msgs[0].as_bytes()) < 20000


@pytest.mark.parametrize("bad", [b"line one\nline two\r\n", b"line one\rline two\r\n"])
def test_data_with_a_bare_line_ending_is_refused(stack_factory, bad):
    stack = stack_factory()
    with socket.create_connection(("127.0.0.1", stack.smtp_port), timeout=10) as sock:
        f = sock.makefile("rwb")

        def cmd(line: bytes) -> bytes:
            if line:
                f.write(line + b"\r\n")
                f.flush()
            reply = b""
            while True:
                got = f.readline()
                reply += got
                if got[3:4] != b"-":
                    return reply

        assert cmd(b"")[:3] == b"220"
        cmd(b"EHLO client.test")
        assert cmd(b"MAIL FROM:<a@client.test>")[:3] == b"250"
        assert cmd(b"RCPT TO:<b@local.test>")[:3] == b"250"
        assert cmd(b"DATA")[:3] == b"354"
        f.write(b"Subject: smuggle\r\n\r\n" + bad + b".\r\n")
        f.flush()
        reply = cmd(b"")
        assert reply[:3] == b"550" and b"5.6.11" in reply, reply


def test_unknown_local_senders_still_get_an_answer_on_quit(stack_factory):
    stack = stack_factory()
    with smtplib.SMTP("127.0.0.1", stack.smtp_port, timeout=10) as s:
        code, text = s.ehlo("client.test")
        assert code == 250
        for ext in (
            "size",
            "8bitmime",
            "smtputf8",
            "pipelining",
            "enhancedstatuscodes",
            "starttls",
        ):
            assert s.has_extn(ext), ext


def test_a_relay_domain_takes_mail_from_anyone_and_forwards_it(stack_factory, make_sink):
    sink: SmtpSink = make_sink()
    stack = stack_factory(
        {
            "server": {"trusted_networks": ["10.0.0.0/8"], "relay_domains": ["gateway.test"]},
            "transport": {"routes": {"gateway.test": f"smtp:[127.0.0.1]:{sink.port}"}},
        }
    )
    with stack.smtp() as s:
        s.ehlo()
        assert s.mail("someone@client.test")[0] == 250
        assert s.rcpt("inbox@gateway.test")[0] == 250
        assert s.rcpt("elsewhere@relay.test")[0] == 554
        assert s.data(MESSAGE)[0] == 250
    (got,) = sink.wait_for(1)
    assert got.rcpt_tos == ["inbox@gateway.test"]
