"""The DSN extension at the door (RFC 3461): RET, ENVID, NOTIFY and ORCPT into the envelope."""

from __future__ import annotations

import pytest
from ingress_harness import RawSMTP, queue_id_of, stored

from elemta.common.xtext import xtext_decode, xtext_encode
from elemta.ingress.arguments import read_mail, read_rcpt


def test_dsn_parameters_travel_in_the_stored_envelope_per_recipient(ingress, smtp, shared_nats):
    s = smtp(ingress)
    s.ehlo()
    assert s.has_extn("dsn")
    assert s.mail("a@client.test", ["RET=HDRS", "ENVID=QQ+2B314"])[0] == 250
    assert s.rcpt("b@local.test", ["NOTIFY=SUCCESS,DELAY", "ORCPT=rfc822;B+2Bx@old.test"])[0] == 250
    assert s.rcpt("c@local.test", ["NOTIFY=NEVER"])[0] == 250
    assert s.rcpt("d@local.test")[0] == 250
    code, text = s.data("Subject: dsn\r\n\r\nHello.\r\n")
    assert code == 250
    env = stored(shared_nats.url, queue_id_of(text)).envelope
    assert (env.dsn_ret, env.dsn_envid) == ("HDRS", "QQ+2B314")
    assert env.dsn_notify == {"b@local.test": "SUCCESS,DELAY", "c@local.test": "NEVER"}
    assert env.dsn_orcpt == {"b@local.test": "rfc822;B+2Bx@old.test"}


def test_a_transaction_after_rset_starts_without_the_previous_dsn_parameters(
    ingress, smtp, shared_nats
):
    s = smtp(ingress)
    s.ehlo()
    assert s.mail("a@client.test", ["RET=FULL"])[0] == 250
    assert s.rcpt("b@local.test", ["NOTIFY=SUCCESS"])[0] == 250
    s.rset()
    assert s.mail("a@client.test")[0] == 250
    assert s.rcpt("b@local.test")[0] == 250
    code, text = s.data("Subject: plain\r\n\r\nHello.\r\n")
    env = stored(shared_nats.url, queue_id_of(text)).envelope
    assert (env.dsn_ret, env.dsn_notify) == ("", {})


def test_an_orcpt_of_500_characters_fits_the_rcpt_line(ingress):
    orcpt = "rfc822;" + "o" * 480 + "@old.test"
    with RawSMTP(ingress.port) as c:
        c.reply()
        c.cmd(b"EHLO client.test")
        assert c.cmd(b"MAIL FROM:<a@client.test> RET=FULL ENVID=" + b"e" * 100).startswith(b"250")
        reply = c.cmd(b"RCPT TO:<b@local.test> NOTIFY=FAILURE ORCPT=" + orcpt.encode())
        assert reply.startswith(b"250"), reply


@pytest.mark.parametrize(
    "arg, reply",
    [
        ("FROM:<a@b.test> RET=BODY", "501 5.5.4 Bad RET parameter: FULL or HDRS"),
        ("FROM:<a@b.test> RET", "501 5.5.4 Bad RET parameter: FULL or HDRS"),
        ("FROM:<a@b.test> ENVID=a+b", "501 5.5.4 Bad ENVID parameter"),
        ("FROM:<a@b.test> ENVID=" + "x" * 101, "501 5.5.4 Bad ENVID parameter"),
    ],
)
def test_malformed_ret_and_envid_are_refused(arg, reply):
    assert read_mail(arg, True, 0) == reply


@pytest.mark.parametrize(
    "arg",
    [
        "TO:<b@c.test> NOTIFY=NEVER,SUCCESS",
        "TO:<b@c.test> NOTIFY=SOMETIMES",
        "TO:<b@c.test> NOTIFY=SUCCESS,SUCCESS",
        "TO:<b@c.test> ORCPT=b@c.test",
        "TO:<b@c.test> ORCPT=rfc822;",
        "TO:<b@c.test> ORCPT=rfc822;a+zz@c.test",
    ],
)
def test_malformed_notify_and_orcpt_are_refused_with_501(arg):
    assert str(read_rcpt(arg, True, False)).startswith("501 5.5.4 Bad ")


def test_notify_is_normalised_and_xtext_round_trips():
    rcpt = read_rcpt("TO:<b@c.test> notify=delay,success ORCPT=RFC822;b+2Bc@d.test", True, False)
    assert not isinstance(rcpt, str)
    assert (rcpt.notify, rcpt.orcpt) == ("SUCCESS,DELAY", "rfc822;b+2Bc@d.test")
    assert xtext_decode("b+2Bc+3D@d.test") == "b+c=@d.test"
    assert xtext_encode("b+c=@d.test \u00e9") == "b+2Bc+3D@d.test+20+C3+A9"
    assert xtext_decode("b+2Bc+3D@d.test+20+C3+A9") == "b+c=@d.test \u00e9"
