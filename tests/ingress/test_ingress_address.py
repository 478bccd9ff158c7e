"""Reading MAIL FROM and RCPT TO: paths, source routes, literals, parameters, refusals."""

from __future__ import annotations

import pytest

from elemta.ingress.address import AddressError, ParameterError, parse_parameters, parse_path
from elemta.ingress.arguments import Mail, read_mail, read_rcpt
from elemta.ingress.policy_client import decision_from_verdict
from elemta.ingress.relay import RelayControl
from elemta.rpc.policy.v1 import policy_pb2 as pb


@pytest.mark.parametrize(
    "arg, mailbox, rest",
    [
        ("<a@b.test>", "a@b.test", ""),
        ("<a@b.test> SIZE=10 BODY=8BITMIME", "a@b.test", "SIZE=10 BODY=8BITMIME"),
        (" <a@b.test>", "a@b.test", ""),
        ("a@b.test SIZE=1", "a@b.test", "SIZE=1"),
        ("<@r1.test,@[192.0.2.1]:a@b.test>", "a@b.test", ""),
        ("<@[IPv6:2001:db8::1]:a@b.test>", "a@b.test", ""),
        ('<"john smith"@b.test>', '"john smith"@b.test', ""),
        ('<"a>b"@b.test>', '"a>b"@b.test', ""),
        ("<a@[192.0.2.1]>", "a@[192.0.2.1]", ""),
        ("<a@[IPv6:2001:db8::1]>", "a@[IPv6:2001:db8::1]", ""),
        ("<a@[x-tag:content]>", "a@[x-tag:content]", ""),
        ("<a@b.test.>", "a@b.test.", ""),
        ("<name.@docomo.test>", "name.@docomo.test", ""),
        ("<j\u00f6rg@m\u00fcnchen.test>", "j\u00f6rg@m\u00fcnchen.test", ""),
        ("<Postmaster>", "Postmaster", ""),
    ],
)
def test_well_formed_paths_give_their_mailbox_and_the_rest(arg, mailbox, rest):
    assert parse_path(arg, bare=("postmaster",)) == (mailbox, rest)


@pytest.mark.parametrize(
    "arg",
    [
        "<a@[>",
        "<a@[127.0.0.1>",
        "<a@[127.0.0.1]",
        "<a@b.test",
        '<"a@b.test>',
        "<a@[999.1.1.1]>",
        "<a@[IPv6:nonsense]>",
        "<a@[IPv6:::1>",
        "<a b@c.test>",
        "<a@b..test>",
        "<a@-b.test>",
        "<a@b.test>x",
        "<@>",
        "<a@>",
        "<@b.test>",
        "<@bad..route:a@b.test>",
        "<@r.test a@b.test>",
        "<a\x00b@c.test>",
        "<a@c.test\x00.evil.test>",
        "<a\x1b[31m@c.test>",
        "<a\udcff@c.test>",
        "<a@b\u2028.test>",
        "<postmaster>",
        "<>",
        "",
    ],
)
def test_malformed_paths_raise_address_error(arg):
    with pytest.raises(AddressError):
        parse_path(arg)


def test_the_null_path_is_taken_only_where_allowed():
    assert parse_path("<> BODY=7BIT", null=True) == ("", "BODY=7BIT")
    with pytest.raises(AddressError):
        parse_path("<>")


@pytest.mark.parametrize(
    "text, params",
    [
        ("", {}),
        ("SIZE=10  body=8bitmime", {"SIZE": "10", "BODY": "8bitmime"}),
        ("SMTPUTF8", {"SMTPUTF8": None}),
        ("X-FOO=a+b", {"X-FOO": "a+b"}),
    ],
)
def test_esmtp_parameters_are_read_with_upper_cased_keywords(text, params):
    assert parse_parameters(text) == params


@pytest.mark.parametrize(
    "text", ["SIZE=", "=1", "-X=1", "A=b=c", "X=\x1b", "SIZE=1 size=2", "\x00"]
)
def test_malformed_parameters_raise_parameter_error(text):
    with pytest.raises(ParameterError):
        parse_parameters(text)


@pytest.mark.parametrize(
    "arg, extended, reply",
    [
        (None, True, "501 5.5.4 Syntax: MAIL FROM:<address>"),
        ("TO:<a@b.test>", True, "501 5.5.4 Syntax: MAIL FROM:<address>"),
        ("FROM:<fuzz@[>", True, "501 5.1.7 Bad sender address syntax"),
        ("FROM:<a@b.test> SIZE=x", True, "501 5.5.4 Bad SIZE parameter"),
        ("FROM:<a@b.test> SIZE=1001", True, "552 5.3.4 Message size exceeds fixed limit"),
        ("FROM:<a@b.test> BODY=BINARYMIME", True, "501 5.5.4 Bad BODY parameter"),
        ("FROM:<a@b.test> SMTPUTF8=yes", True, "501 5.5.4 SMTPUTF8 takes no value"),
        (
            "FROM:<a@b.test> NOPE",
            True,
            "555 5.5.4 MAIL FROM parameters not recognized or not implemented",
        ),
        (
            "FROM:<a@b.test> SIZE=1",
            False,
            "555 5.5.4 MAIL FROM parameters not recognized or not implemented",
        ),
        ("FROM:<a@b.test> SIZE=1 SIZE=2", True, "501 5.5.4 Syntax error in parameters"),
        ("FROM:<j\u00f6rg@b.test>", True, "553 5.6.7 Must declare SMTPUTF8 to send UTF8 mail"),
    ],
)
def test_mail_arguments_that_cannot_be_taken_get_their_refusal(arg, extended, reply):
    assert read_mail(arg, extended, 1000) == reply


def test_mail_arguments_give_the_sender_and_normalised_options():
    mail = read_mail("from: <> body=8bitmime SIZE=0099 SMTPUTF8", True, 1000)
    assert mail == Mail("", ["BODY=8BITMIME", "SIZE=99", "SMTPUTF8"], 99, "8BITMIME", True)
    assert read_mail("FROM:<j\u00f6rg@b.test> SMTPUTF8", True, 0).sender == "j\u00f6rg@b.test"


def test_rcpt_arguments_give_the_recipient_or_the_refusal():
    assert read_rcpt("TO:<@r.test:b@c.test>", True, False).recipient == "b@c.test"
    assert read_rcpt("to:<Postmaster>", True, False).recipient == "Postmaster"
    assert read_rcpt("TO:<postmaster@[127.0.0.1>", True, False) == (
        "501 5.1.3 Bad recipient address syntax"
    )
    assert read_rcpt("TO:<b@c.test> XNOTIFY=NEVER", True, False).startswith("555 5.5.4 ")
    assert read_rcpt("TO:<b@c.test>", True, False).options == []
    assert read_rcpt("TO:<j\u00f6rg@b.test>", True, False).startswith("553 5.6.7 ")
    assert read_rcpt("TO:<j\u00f6rg@b.test>", True, True).recipient == "j\u00f6rg@b.test"


def test_relay_refusals_show_the_address_printable():
    relay = RelayControl(["local.test"], [])
    assert relay.check("192.0.2.1", "x\x1b[31m@foreign.test") == (
        "501 5.1.3 <x?[31m@foreign.test>: Bad recipient address syntax"
    )
    assert relay.check("192.0.2.1", '"a@b"@local.test').startswith("554 5.7.1 ")


def test_a_policy_reason_becomes_one_printable_ascii_reply_line():
    verdict = pb.Verdict(
        action=pb.ACTION_REJECT,
        smtp_code=550,
        enhanced_code="5.7.1",
        reason="no\r\n250 2.0.0 ok \x1b[31m<caf\u00e9@x.test>\x00",
    )
    reply = decision_from_verdict(verdict).reply
    assert reply == "550 5.7.1 no 250 2.0.0 ok [31m<caf?@x.test>"
    assert reply.isascii() and reply.isprintable()
