"""SMTP smuggling: only <CR><LF>.<CR><LF> ends DATA, and bare CR or LF refuses the message."""

from __future__ import annotations

import pytest
from ingress_harness import RawSMTP, message_count

SMUGGLED = (
    b"MAIL FROM:<admin@local.test>\r\n"
    b"RCPT TO:<victim@local.test>\r\n"
    b"DATA\r\n"
    b"From: admin@local.test\r\nSubject: smuggled\r\n\r\nsmuggled\r\n"
)


def open_transaction(c: RawSMTP) -> None:
    assert c.reply()[:3] == b"220"
    c.cmd(b"EHLO client.test")
    assert c.cmd(b"MAIL FROM:<a@client.test>")[:3] == b"250"
    assert c.cmd(b"RCPT TO:<b@local.test>")[:3] == b"250"
    assert c.cmd(b"DATA")[:3] == b"354"


@pytest.mark.parametrize(
    "bad",
    [b"line one\nline two\r\n", b"line one\rline two\r\n", b"trailing cr\r\r\n", b"\n\r\n"],
    ids=["bare-lf", "bare-cr", "cr-cr-lf", "lone-lf"],
)
def test_data_with_a_bare_cr_or_lf_is_refused_with_550_5_6_11_and_not_stored(
    ingress, shared_nats, bad
):
    before = message_count(shared_nats.url)
    with RawSMTP(ingress.port) as c:
        open_transaction(c)
        c.send(b"Subject: x\r\n\r\n" + bad + b".\r\n")
        assert c.reply() == b"550 5.6.11 Message refused: bare CR or LF in message data\r\n"
        # the session is usable afterwards
        assert c.cmd(b"NOOP") == b"250 2.0.0 Ok\r\n"
    assert message_count(shared_nats.url) == before


@pytest.mark.parametrize(
    "end",
    [b"\n.\n", b"\r.\r", b"\r\n.\n", b"\n.\r\n", b"\r.\r\n", b"\r\n.\r"],
    ids=["lf-dot-lf", "cr-dot-cr", "crlf-dot-lf", "lf-dot-crlf", "cr-dot-crlf", "crlf-dot-cr"],
)
def test_a_smuggled_end_of_data_does_not_end_the_message_nor_start_a_second_one(
    ingress, shared_nats, end
):
    before = message_count(shared_nats.url)
    with RawSMTP(ingress.port) as c:
        open_transaction(c)
        c.send(b"Subject: cover\r\n\r\ncover" + end + SMUGGLED + b".\r\n")
        # one reply for the one message the client sent, and it is a refusal
        assert c.reply() == b"550 5.6.11 Message refused: bare CR or LF in message data\r\n"
        # nothing else is waiting: the smuggled commands were never read as commands
        assert c.cmd(b"NOOP") == b"250 2.0.0 Ok\r\n"
        assert c.cmd(b"QUIT") == b"221 2.0.0 Bye\r\n"
    assert message_count(shared_nats.url) == before


def test_a_well_formed_message_after_a_refused_one_goes_through(ingress, shared_nats):
    before = message_count(shared_nats.url)
    with RawSMTP(ingress.port) as c:
        open_transaction(c)
        c.send(b"Subject: x\r\n\r\nbad\n.\n" + SMUGGLED + b".\r\n")
        assert c.reply()[:3] == b"550"
        assert c.cmd(b"MAIL FROM:<a@client.test>")[:3] == b"250"
        assert c.cmd(b"RCPT TO:<b@local.test>")[:3] == b"250"
        assert c.cmd(b"DATA")[:3] == b"354"
        c.send(b"Subject: good\r\n\r\nfine\r\n.\r\n")
        assert c.reply().startswith(b"250 2.0.0 Ok: queued as ")
    assert message_count(shared_nats.url) == before + 1
