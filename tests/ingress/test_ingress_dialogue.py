"""The SMTP dialogue: extensions, replies, relay control, limits and timeouts."""

from __future__ import annotations

import re
import smtplib
import ssl
import time

import pytest
from ingress_harness import MESSAGE, RawSMTP, message_count, queue_id_of, stored

ENHANCED = re.compile(rb"^\d{3}[ -][245]\.\d{1,3}\.\d{1,3} ")


def unverified() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def test_ehlo_advertises_size_8bitmime_smtputf8_pipelining_enhancedstatuscodes_and_starttls(
    ingress, smtp
):
    s = smtp(ingress)
    code, text = s.ehlo()
    assert code == 250
    assert text.splitlines()[0] == b"mx.elemta.test"
    for ext in ("pipelining", "8bitmime", "smtputf8", "enhancedstatuscodes", "starttls", "dsn"):
        assert s.has_extn(ext), ext
    assert s.esmtp_features["size"] == str(64 * 1024)
    assert not s.has_extn("auth")


def test_every_reply_after_the_greeting_carries_an_enhanced_status_code(ingress):
    with RawSMTP(ingress.port) as c:
        assert c.reply() == b"220 mx.elemta.test ESMTP Elemta\r\n"
        c.cmd(b"EHLO client.test")
        replies = [
            c.cmd(line)
            for line in (
                b"NOOP",
                b"RSET",
                b"HELP",
                b"VRFY postmaster",
                b"EXPN staff",
                b"BOGUS",
                b"",
                b"AUTH PLAIN AGFhAGI=",
                b"DATA",
                b"RCPT TO:<b@local.test>",
                b"MAIL FROM:<a@client.test>",
                b"MAIL FROM:<a@client.test>",
                b"RCPT TO:<b@local.test>",
                b"RCPT TO:<b@local.test> NOTIFY=NEVER",
                b"MAIL FROM:<@>",
                b"RSET",
                b"STARTTLS now",
                b"QUIT",
            )
        ]
    for reply in replies:
        assert ENHANCED.match(reply), reply
    assert replies[0] == b"250 2.0.0 Ok\r\n"
    assert replies[-1] == b"221 2.0.0 Bye\r\n"


def test_a_local_domain_message_is_queued_and_stored_with_envelope_and_received_header(
    ingress, smtp, shared_nats
):
    s = smtp(ingress)
    s.ehlo()
    body = MESSAGE + ".A line that starts with a dot.\r\n.\r\n..two dots\r\n"
    assert s.mail("a@client.test")[0] == 250
    assert s.rcpt("b@local.test") == (250, b"2.1.5 Ok")
    code, text = s.data(body)
    assert code == 250 and text.startswith(b"2.0.0 Ok: queued as ")
    qid = queue_id_of(text)
    msg = stored(shared_nats.url, qid)
    assert msg is not None and msg.subject == f"elemta.msg.{qid}"
    assert msg.headers["Nats-Msg-Id"] == qid
    env = msg.envelope
    assert env.id == qid and env.sender == "a@client.test" and env.recipients == ["b@local.test"]
    assert env.client_ip == "127.0.0.1" and env.client_helo == "client.test"
    assert env.size == len(msg.data) and not env.hold and not env.body_object
    received, rest = msg.data.split(b"\r\nFrom: ", 1)
    assert received.startswith(b"Received: from client.test (unknown [127.0.0.1])\r\n")
    assert f"by mx.elemta.test (Elemta) with ESMTP id {qid}\r\n".encode() in received
    assert b"\tfor <b@local.test>; " in received
    assert rest.endswith(b"Hello.\r\n.A line that starts with a dot.\r\n.\r\n..two dots\r\n"), rest


def test_smtputf8_and_8bitmime_parameters_travel_in_the_envelope(ingress, smtp, shared_nats):
    s = smtp(ingress)
    s.ehlo()
    assert s.mail("a@client.test", ["BODY=8BITMIME", "SMTPUTF8"])[0] == 250
    assert s.rcpt("b@local.test")[0] == 250
    code, text = s.data("Subject: caf\u00e9\r\n\r\nna\u00efve\r\n".encode())
    assert code == 250
    env = stored(shared_nats.url, queue_id_of(text)).envelope
    assert env.smtputf8 and env.body_8bit


def test_the_null_sender_is_accepted_and_stored_as_empty(ingress, smtp, shared_nats):
    s = smtp(ingress)
    s.ehlo()
    assert s.docmd("MAIL FROM:<>")[0] == 250
    assert s.rcpt("postmaster@local.test")[0] == 250
    code, text = s.data("Subject: bounce\r\n\r\nx\r\n")
    assert code == 250
    assert stored(shared_nats.url, queue_id_of(text)).envelope.sender == ""


def test_relay_to_a_foreign_domain_from_an_untrusted_network_is_denied(ingress_factory, smtp):
    runner = ingress_factory({"server": {"trusted_networks": ["10.0.0.0/8"]}})
    s = smtp(runner)
    s.ehlo()
    assert s.mail("spammer@client.test")[0] == 250
    assert s.rcpt("victim@foreign.test") == (
        554,
        b"5.7.1 <victim@foreign.test>: Relay access denied",
    )
    # a route hidden in a local address is relaying too
    assert s.rcpt("victim%foreign.test@local.test")[0] == 554
    assert s.rcpt("bob@LOCAL.test")[0] == 250
    assert s.data(MESSAGE)[0] == 250


def test_relay_to_a_foreign_domain_from_a_trusted_network_is_accepted(ingress, smtp, shared_nats):
    s = smtp(ingress)
    s.ehlo()
    s.mail("a@client.test")
    assert s.rcpt("carol@foreign.test")[0] == 250
    code, text = s.data(MESSAGE)
    assert code == 250
    assert stored(shared_nats.url, queue_id_of(text)).envelope.recipients == ["carol@foreign.test"]


@pytest.mark.parametrize(
    "command, reply",
    [
        (b"RCPT TO:<a b@>", b"501 5.1.3"),
        (b"RCPT TO:<nodomain>", b"501 5.1.3"),
        (b"RCPT TO:<x@bad_domain..test>", b"501 5.1.3"),
        (b"RCPT TO:<@>", b"501 5.1.3"),
    ],
)
def test_malformed_recipient_addresses_are_refused_with_501_5_1_3(ingress, command, reply):
    with RawSMTP(ingress.port) as c:
        c.reply()
        c.cmd(b"EHLO client.test")
        assert c.cmd(b"MAIL FROM:<a@client.test>")[:3] == b"250"
        assert c.cmd(command).startswith(reply)


def test_a_size_parameter_over_the_limit_is_refused_at_mail(ingress, smtp):
    s = smtp(ingress)
    s.ehlo()
    assert s.mail("a@client.test", [f"SIZE={64 * 1024 + 1}"]) == (
        552,
        b"5.3.4 Message size exceeds fixed limit",
    )
    assert s.mail("a@client.test", [f"SIZE={1000}"])[0] == 250


def test_data_over_the_limit_is_refused_nothing_is_stored_and_the_session_goes_on(
    ingress, smtp, shared_nats
):
    before = message_count(shared_nats.url)
    s = smtp(ingress)
    s.ehlo()
    s.mail("a@client.test")
    s.rcpt("b@local.test")
    code, text = s.data(MESSAGE + ("x" * 70 + "\r\n") * 1000)
    assert (code, text) == (552, b"5.3.4 Message size exceeds fixed limit")
    assert message_count(shared_nats.url) == before
    assert s.mail("a@client.test")[0] == 250
    assert s.rcpt("b@local.test")[0] == 250
    assert s.data(MESSAGE)[0] == 250
    assert message_count(shared_nats.url) == before + 1


def test_more_recipients_than_allowed_get_452_4_5_3(ingress, smtp):
    s = smtp(ingress)
    s.ehlo()
    s.mail("a@client.test")
    for i in range(5):
        assert s.rcpt(f"r{i}@local.test")[0] == 250
    assert s.rcpt("r5@local.test") == (452, b"4.5.3 Too many recipients")
    assert s.data(MESSAGE)[0] == 250


@pytest.mark.parametrize("length", [700, 5000])
def test_an_over_long_command_line_gets_500_5_5_2(ingress, length):
    with RawSMTP(ingress.port) as c:
        c.reply()
        c.cmd(b"EHLO client.test")
        reply = c.cmd(b"MAIL FROM:<" + b"a" * length + b"@client.test>")
        assert reply == b"500 5.5.2 Line too long\r\n"
        assert c.cmd(b"NOOP") == b"250 2.0.0 Ok\r\n"


def test_an_over_long_data_line_gets_500_5_5_2_and_a_998_octet_line_passes(
    ingress, smtp, shared_nats
):
    before = message_count(shared_nats.url)
    s = smtp(ingress)
    s.ehlo()
    s.mail("a@client.test")
    s.rcpt("b@local.test")
    assert s.data(MESSAGE + "y" * 999 + "\r\n") == (500, b"5.5.2 Line too long")
    assert message_count(shared_nats.url) == before
    s.mail("a@client.test")
    s.rcpt("b@local.test")
    assert s.data(MESSAGE + "." + "y" * 997 + "\r\n")[0] == 250


def test_pipelined_mail_rcpt_data_and_quit_are_answered_in_order(ingress, shared_nats):
    with RawSMTP(ingress.port) as c:
        c.reply()
        c.cmd(b"EHLO client.test")
        c.send(
            b"MAIL FROM:<a@client.test>\r\nRCPT TO:<b@local.test>\r\n"
            b"RCPT TO:<nobody@foreign.test>\r\nRCPT TO:<c@local.test>\r\nDATA\r\n"
        )
        assert c.reply()[:3] == b"250"
        assert c.reply()[:3] == b"250"
        assert c.reply()[:3] == b"250"  # 127.0.0.1 is trusted
        assert c.reply()[:3] == b"250"
        assert c.reply()[:3] == b"354"
        c.send(b"Subject: p\r\n\r\nbody\r\n.\r\nMAIL FROM:<a@client.test>\r\nQUIT\r\n")
        first = c.reply()
        assert first.startswith(b"250 2.0.0 Ok: queued as ")
        assert c.reply() == b"250 2.1.0 Ok\r\n"
        assert c.reply() == b"221 2.0.0 Bye\r\n"
    msg = stored(shared_nats.url, queue_id_of(first))
    assert msg.envelope.recipients == ["b@local.test", "nobody@foreign.test", "c@local.test"]
    assert msg.data.endswith(b"Subject: p\r\n\r\nbody\r\n")
    assert b"\tfor <" not in msg.data  # several recipients are not disclosed


@pytest.mark.parametrize(
    "raw, content",
    [
        (b".\r\n", b""),
        (b"\r\n.\r\n", b"\r\n"),
        (b"..\r\n.\r\n", b".\r\n"),
        (b"\r\n\r\n\r\n.\r\n", b"\r\n\r\n\r\n"),
        (b"x\r\n..\r\n...y\r\n.\r\n", b"x\r\n.\r\n..y\r\n"),
        (b"S: a\r\n\r\n.\r\n", b"S: a\r\n\r\n"),
    ],
)
def test_data_ends_at_the_first_crlf_dot_crlf_and_is_dot_unstuffed(
    ingress, shared_nats, raw, content
):
    with RawSMTP(ingress.port) as c:
        c.reply()
        c.cmd(b"EHLO client.test")
        c.cmd(b"MAIL FROM:<a@client.test>")
        c.cmd(b"RCPT TO:<b@local.test>")
        assert c.cmd(b"DATA")[:3] == b"354"
        c.send(raw + b"NOOP\r\n")
        reply = c.reply()
        assert reply.startswith(b"250 2.0.0 Ok: queued as "), reply
        assert c.reply() == b"250 2.0.0 Ok\r\n"
    data = stored(shared_nats.url, queue_id_of(reply)).data
    assert data.split(b"\r\n", 3)[3] == content


def test_data_split_across_many_small_writes_ends_at_the_mark(ingress, shared_nats):
    with RawSMTP(ingress.port) as c:
        c.reply()
        c.cmd(b"EHLO client.test")
        c.cmd(b"MAIL FROM:<a@client.test>")
        c.cmd(b"RCPT TO:<b@local.test>")
        assert c.cmd(b"DATA")[:3] == b"354"
        for piece in (b"\r", b"\nA: b\r\n\r\nline\r", b"\n.", b".x\r\n.", b"\r", b"\n"):
            c.send(piece)
            time.sleep(0.02)
        reply = c.reply()
        assert reply[:3] == b"250"
    assert stored(shared_nats.url, queue_id_of(reply)).data.endswith(
        b"\r\n\r\nA: b\r\n\r\nline\r\n.x\r\n"
    )


def test_starttls_works_and_the_received_header_says_esmtps(ingress, smtp, shared_nats):
    s = smtp(ingress)
    s.ehlo()
    assert s.starttls(context=unverified())[0] == 220
    s.ehlo()
    assert not s.has_extn("starttls")
    s.mail("a@client.test")
    s.rcpt("b@local.test")
    code, text = s.data(MESSAGE)
    assert code == 250
    qid = queue_id_of(text)
    assert f"with ESMTPS id {qid}".encode() in stored(shared_nats.url, qid).data


def test_commands_pipelined_after_starttls_are_discarded_not_run_inside_tls(ingress):
    with RawSMTP(ingress.port) as c:
        c.reply()
        c.cmd(b"EHLO client.test")
        c.send(b"STARTTLS\r\nMAIL FROM:<injected@client.test>\r\n")
        assert c.reply() == b"220 2.0.0 Ready to start TLS\r\n"
        tls = unverified().wrap_socket(c.sock, server_hostname="mx.elemta.test")
        f = tls.makefile("rb")
        tls.sendall(b"EHLO client.test\r\n")
        while f.readline()[3:4] == b"-":
            pass
        tls.sendall(b"RCPT TO:<b@local.test>\r\n")
        assert f.readline() == b"503 5.5.1 Error: need MAIL command\r\n"
        tls.close()


def test_an_idle_session_gets_421_4_4_2_after_the_command_timeout(ingress_factory):
    runner = ingress_factory({"ingress": {"command_timeout": 1.0}})
    with RawSMTP(runner.port) as c:
        c.reply()
        c.cmd(b"EHLO client.test")
        started = time.monotonic()
        assert c.reply() == b"421 4.4.2 mx.elemta.test Error: timeout exceeded\r\n"
        assert 0.8 < time.monotonic() - started < 3
        assert c.closed()


def test_data_that_takes_longer_than_the_data_timeout_gets_421_4_4_2(ingress_factory, shared_nats):
    runner = ingress_factory({"ingress": {"data_timeout": 1.0}})
    before = message_count(shared_nats.url)
    with RawSMTP(runner.port) as c:
        c.reply()
        c.cmd(b"EHLO client.test")
        c.cmd(b"MAIL FROM:<a@client.test>")
        c.cmd(b"RCPT TO:<b@local.test>")
        assert c.cmd(b"DATA")[:3] == b"354"
        for _ in range(4):
            c.send(b"Slowly: but surely\r\n")
            time.sleep(0.3)
        assert c.reply() == b"421 4.4.2 mx.elemta.test Error: timeout exceeded\r\n"
        assert c.closed()
    assert message_count(shared_nats.url) == before


def test_helo_clients_get_plain_smtp_in_the_received_header(ingress, shared_nats):
    s = smtplib.SMTP("127.0.0.1", ingress.port, local_hostname="old.client.test", timeout=10)
    try:
        assert s.helo()[0] == 250
        s.mail("a@client.test")
        s.rcpt("b@local.test")
        code, text = s.data(MESSAGE)
        assert code == 250
        data = stored(shared_nats.url, queue_id_of(text)).data
        assert data.startswith(b"Received: from old.client.test (unknown [127.0.0.1])")
        assert b" with SMTP id " in data
    finally:
        s.close()
