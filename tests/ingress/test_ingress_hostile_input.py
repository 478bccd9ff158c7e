"""Hostile and broken input: answered at once, with a clean permanent refusal, never echoed raw."""

from __future__ import annotations

import logging
import re
import ssl

import pytest
from ingress_harness import CoalescingTLSClient, RawSMTP, queue_id_of, stored, wait_until

# One reply line as RFC 5321 4.2 has it: a code, a space or hyphen, printable ASCII.
WELL_FORMED = re.compile(rb"^[2-5]\d\d[ -][\x20-\x7e]*\r\n$")


def well_formed(reply: bytes) -> bool:
    lines = reply.split(b"\r\n")[:-1]
    return bool(lines) and all(WELL_FORMED.match(line + b"\r\n") for line in lines)


def test_the_first_command_sent_together_with_the_tls_finished_message_is_answered(ingress):
    with RawSMTP(ingress.port, timeout=10) as c:
        c.reply()
        c.cmd(b"EHLO client.test")
        assert c.cmd(b"STARTTLS") == b"220 2.0.0 Ready to start TLS\r\n"
        client = CoalescingTLSClient(c.sock)
        client.handshake_then(b"EHLO fuzz.example\r\n")
        # The 10 s socket timeout fails this test long before the 30 s idle timeout.
        reply = client.reply()
        assert reply.startswith(b"250-mx.elemta.test\r\n") and b"STARTTLS" not in reply


def test_a_session_that_sends_its_first_tls_command_with_finished_delivers_its_message(
    ingress, shared_nats
):
    with RawSMTP(ingress.port, timeout=10) as c:
        c.reply()
        c.cmd(b"EHLO client.test")
        c.cmd(b"STARTTLS")
        client = CoalescingTLSClient(c.sock)
        client.handshake_then(
            b"EHLO fuzz.example\r\nMAIL FROM:<a@client.test>\r\nRCPT TO:<b@local.test>\r\nDATA\r\n"
        )
        assert client.reply().startswith(b"250-mx.elemta.test")
        assert client.reply() == b"250 2.1.0 Ok\r\n"
        assert client.reply() == b"250 2.1.5 Ok\r\n"
        assert client.reply()[:3] == b"354"
        client.tls.write(b"Subject: coalesced\r\n\r\nhi\r\n.\r\n")
        c.sock.sendall(client.outgoing.read())
        reply = client.reply()
    assert reply.startswith(b"250 2.0.0 Ok: queued as ")
    assert b"with ESMTPS id" in stored(shared_nats.url, queue_id_of(reply)).data


@pytest.mark.parametrize(
    "line, code",
    [
        (b"\x00", b"500"),
        (b"FOO\rBAR", b"500"),
        (b"VRFY <<\x1b[31m", b"501"),
        (b"\x1b]0;owned\x07 x", b"500"),
        (b"HELP \x1b[2J", b"501"),
        (b"MAIL FROM:<a\x00b@client.test>", b"501"),
        (b"MAIL FROM:<a@client.test> X-\x1b=1", b"501"),
    ],
    ids=["nul", "bare-cr", "vrfy-escape", "osc-escape", "help-escape", "mail-nul", "param-escape"],
)
def test_replies_never_carry_control_bytes_the_client_sent(ingress, line, code):
    with RawSMTP(ingress.port) as c:
        c.reply()
        c.cmd(b"EHLO client.test")
        reply = c.cmd(line)
        assert well_formed(reply), reply
        assert reply[:3] == code, reply
        assert c.cmd(b"NOOP") == b"250 2.0.0 Ok\r\n"


def test_a_recipient_with_a_nul_inside_is_a_syntax_error_not_a_relay_refusal_echoing_it(
    ingress_factory,
):
    runner = ingress_factory({"server": {"trusted_networks": ["10.0.0.0/8"]}})
    with RawSMTP(runner.port) as c:
        c.reply()
        c.cmd(b"EHLO client.test")
        assert c.cmd(b"MAIL FROM:<a@client.test>")[:3] == b"250"
        reply = c.cmd(b"RCPT TO:<postmaster@localhost\x00.fuzz-relay.example>")
        assert well_formed(reply), reply
        assert reply.startswith(b"501 5.1.3 ")


def test_log_lines_carry_no_control_bytes_the_client_sent(ingress, caplog):
    caplog.set_level(logging.INFO)
    with RawSMTP(ingress.port) as c:
        c.reply()
        c.cmd(b"EHLO evil\x1b[31m.test")
        for line in (b"\x00\x1b[2J", b"FOO\rBAR", b"RCPT TO:<x\x1b@local.test>"):
            c.cmd(line)
        c.cmd(b"MAIL FROM:<a@client.test>")
        c.cmd(b"RCPT TO:<x\x1b[31m@local.test>")
        c.cmd(b"RCPT TO:<postmaster@localhost\x00.fuzz-relay.example>")
        c.cmd(b"QUIT")
    messages = [r.getMessage() for r in caplog.records]
    assert any("unrecognised" in m or "not recognized" in m for m in messages), messages
    for message in messages:
        assert message.isprintable(), repr(message)


@pytest.mark.parametrize(
    "command, reply",
    [
        (b"MAIL FROM:<fuzz@[>", b"501 5.1.7 "),
        (b"MAIL FROM:<fuzz@[127.0.0.1>", b"501 5.1.7 "),
        (b"MAIL FROM:<fuzz@[127.0.0.1]", b"501 5.1.7 "),
        (b"RCPT TO:<postmaster@[>", b"501 5.1.3 "),
        (b"RCPT TO:<postmaster@[127.0.0.1>", b"501 5.1.3 "),
        (b"RCPT TO:<postmaster@[IPv6:::1>", b"501 5.1.3 "),
        (b"RCPT TO:<postmaster@local.test", b"501 5.1.3 "),
        (b'RCPT TO:<"postmaster@local.test>', b"501 5.1.3 "),
    ],
)
def test_an_unterminated_address_is_a_permanent_syntax_error_without_a_traceback(
    ingress, caplog, command, reply
):
    caplog.set_level(logging.INFO)
    with RawSMTP(ingress.port) as c:
        c.reply()
        c.cmd(b"EHLO client.test")
        if command.startswith(b"RCPT"):
            assert c.cmd(b"MAIL FROM:<a@client.test>")[:3] == b"250"
        got = c.cmd(command)
        assert got.startswith(reply), got
        assert well_formed(got)
        assert c.cmd(b"NOOP") == b"250 2.0.0 Ok\r\n"
    assert not [r for r in caplog.records if r.exc_info], caplog.text


def test_a_source_route_is_accepted_and_ignored(ingress, shared_nats):
    with RawSMTP(ingress.port) as c:
        c.reply()
        c.cmd(b"EHLO client.test")
        assert c.cmd(b"MAIL FROM:<@relay.example:a@client.test>")[:3] == b"250"
        assert c.cmd(b"RCPT TO:<@other.example,@more.example:postmaster@local.test>")[:3] == b"250"
        assert c.cmd(b"DATA")[:3] == b"354"
        reply = c.cmd(b"Subject: routed\r\n\r\nhi\r\n.")
    env = stored(shared_nats.url, queue_id_of(reply)).envelope
    assert env.sender == "a@client.test"
    assert env.recipients == ["postmaster@local.test"]


def test_a_source_route_neither_opens_nor_closes_relaying(ingress_factory):
    runner = ingress_factory({"server": {"trusted_networks": ["10.0.0.0/8"]}})
    with RawSMTP(runner.port) as c:
        c.reply()
        c.cmd(b"EHLO client.test")
        assert c.cmd(b"MAIL FROM:<a@client.test>")[:3] == b"250"
        # the route names us, the mailbox is foreign: relaying, refused
        assert c.cmd(b"RCPT TO:<@local.test:victim@foreign.test>").startswith(b"554 5.7.1 ")
        # the route names a foreign host, the mailbox is ours: local mail
        assert c.cmd(b"RCPT TO:<@foreign.test:bob@local.test>")[:3] == b"250"
        assert c.cmd(b"RCPT TO:<@bad..route:bob@local.test>").startswith(b"501 5.1.3 ")


def test_nothing_more_is_read_inside_tls_once_the_server_said_goodbye(ingress, caplog):
    caplog.set_level(logging.INFO)
    with RawSMTP(ingress.port) as c:
        c.reply()
        c.cmd(b"EHLO client.test")
        c.cmd(b"STARTTLS")
        client = CoalescingTLSClient(c.sock)
        # five unknown commands end the session; more follow in the same write
        client.handshake_then(
            b"A\r\nB\r\nC\r\nD\r\nE\r\nF\r\nG\r\n" + b"X" * 5000 + b"\r\nNOOP\r\n"
        )
        replies = [client.reply() for _ in range(5)]
        assert replies[-1] == b"502 5.5.1 Too many unrecognized commands, goodbye.\r\n"
        with pytest.raises((ConnectionError, ssl.SSLError)):
            client.reply()
    wait_until(lambda: not ingress.svc.server.sessions, what="the session to end")
    assert not [r for r in caplog.records if r.exc_info], caplog.text


def test_a_session_that_never_does_its_tls_handshake_times_out_and_is_gone(ingress_factory):
    runner = ingress_factory({"ingress": {"command_timeout": 1.0}})
    with RawSMTP(runner.port) as c:
        c.reply()
        c.cmd(b"EHLO client.test")
        assert c.cmd(b"STARTTLS")[:3] == b"220"
        c.send(b"\x16\x03\x01\x02\x00")  # the start of a ClientHello, and then nothing
        assert c.closed()
    # nothing is left of it: no session to drain, no task waiting for ever
    wait_until(lambda: not runner.svc.server.sessions, timeout=10, what="the session to end")
