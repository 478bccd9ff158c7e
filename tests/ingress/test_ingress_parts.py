"""The pieces on their own: reply codes, data framing, relay rules, headers, TLS files."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from ingress_harness import make_config

from elemta.ingress.data import check_data, unstuff, wire_ready
from elemta.ingress.received import protocol_name, received_header
from elemta.ingress.relay import RelayControl
from elemta.ingress.replies import with_enhanced_code
from elemta.ingress.tls import self_signed_pem, server_context
from elemta.ingress.transaction import edit_headers


@pytest.mark.parametrize(
    "given, sent",
    [
        ("250 OK", "250 2.0.0 Ok"),
        ("500 Command line too long", "500 5.5.2 Line too long"),
        ("553 5.1.3 Error: malformed address", "501 5.1.3 Bad address syntax"),
        ("503 Error: need RCPT command", "503 5.5.1 Error: need RCPT command"),
        ("250 2.1.5 Ok", "250 2.1.5 Ok"),
        ("599 Odd", "599 5.0.0 Odd"),
        ("250 4.0.0 looks like a code", "250 2.0.0 4.0.0 looks like a code"),
        ("354 End data with <CR><LF>.<CR><LF>", "354 End data with <CR><LF>.<CR><LF>"),
    ],
)
def test_replies_get_an_enhanced_status_code_unless_they_have_one(given, sent):
    assert with_enhanced_code(given) == sent


def test_unstuffing_drops_the_first_dot_of_each_line_only():
    assert unstuff(b"..a\r\n.\r\n...b\r\nc.d\r\n") == b".a\r\n\r\n..b\r\nc.d\r\n"


@pytest.mark.parametrize(
    "data, bare",
    [
        (b"a\r\nb\r\n", False),
        (b"", False),
        (b"a\nb\r\n", True),
        (b"a\rb\r\n", True),
        (b"a\r\r\n", True),
        (b"a\r\n\n", True),
        (b"\n\r\n", True),
    ],
)
def test_bare_cr_and_lf_are_found_anywhere(data, bare):
    content, reply = check_data(data + b".\r\n", 10000, 998)
    assert (reply == "550 5.6.11 Message refused: bare CR or LF in message data") is bare
    assert content == (b"" if bare else data)


def test_data_checks_size_and_line_length_after_unstuffing():
    line = b"." + b"x" * 998 + b"\r\n"  # 999 octets on the wire, 998 in the message
    assert check_data(line + b".\r\n", 10000, 998) == (line[1:], "")
    assert check_data(b"x" * 999 + b"\r\n.\r\n", 10000, 998)[1] == "500 5.5.2 Line too long"
    assert check_data(b"..\r\n" * 10 + b".\r\n", 30, 998) == (b".\r\n" * 10, "")
    too_big = check_data(b"x\r\n" * 20 + b".\r\n", 30, 998)[1]
    assert too_big == "552 5.3.4 Message size exceeds fixed limit"


RECEIVED = b"Received: from client.test\r\n\tby mx.test; Mon, 30 Nov 2026 23:00:00 +0000\r\n"


@pytest.mark.parametrize(
    "prefix, content, ready",
    [
        (RECEIVED, b"Subject: x\r\n\r\nHello.\r\nc.d\r\n", True),
        (b"", b"Subject: x\r\n\r\nHello.\r\n", True),
        (RECEIVED, b".leading dot\r\n", False),  # the first line of the content
        (RECEIVED, b"Subject: x\r\n\r\n.\r\n", False),  # a line of exactly "."
        (RECEIVED, b"Subject: x\r\n\r\n..two\r\n", False),
        (RECEIVED, b"", True),
        (b"", b"", False),  # nothing at all: DATA adds a line end
        (b"X-Added: .\r\n", b"a\r\n", True),  # a dot inside a line is nothing
        (b"X-Added: a\r\n.b\r\n", b"a\r\n", False),  # policy put a dot line on top
        (b"X-Added: a\nb\r\n", b"a\r\n", False),  # a bare LF in an added field
        (b"X-Added: a\rb\r\n", b"a\r\n", False),
        (b"X-Added: a", b"\r\nb\r\n", False),  # the content would not begin a line
    ],
)
def test_a_message_is_wire_ready_only_with_crlf_lines_none_beginning_with_a_dot(
    prefix: bytes, content: bytes, ready: bool
) -> None:
    assert wire_ready(prefix + content, content) is ready


@pytest.mark.parametrize(
    "wire, ready",
    [
        (b"Subject: x\r\n\r\nHello. a.b\r\n", True),
        (b"Subject: x\r\n\r\n..\r\n", False),  # a line of exactly "."
        (b"..leading\r\n", False),
        (b"Subject: x\r\n\r\n.not stuffed by the client\r\n", True),  # its dot is gone
        (b"", True),
    ],
)
def test_what_the_data_checks_found_decides_whether_the_message_is_wire_ready(
    wire: bytes, ready: bool
) -> None:
    content, reply = check_data(wire + b".\r\n", 10000, 998)
    assert reply == ""
    assert wire_ready(RECEIVED + content, content) is ready


def test_a_message_whose_body_policy_replaced_is_not_wire_ready() -> None:
    content = b"Subject: x\r\n\r\nHello.\r\n"
    assert not wire_ready(RECEIVED + b"Subject: x\r\n\r\nReplaced.\r\n", content)


def test_relay_control_welcomes_local_domains_and_trusted_clients_only():
    relay = RelayControl(["local.test"], ["10.0.0.0/8", "2001:db8::/32"])
    assert relay.check("192.0.2.1", "bob@local.test") is None
    assert relay.check("192.0.2.1", "bob@LOCAL.TEST.") is None
    assert relay.check("192.0.2.1", "x@foreign.test") == (
        "554 5.7.1 <x@foreign.test>: Relay access denied"
    )
    assert relay.check("192.0.2.1", "x%foreign.test@local.test").startswith("554 5.7.1")
    assert relay.check("10.1.2.3", "x@foreign.test") is None
    assert relay.check("::ffff:10.1.2.3", "x@foreign.test") is None
    assert relay.check("2001:db8::5", "x@[192.0.2.7]") is None
    assert relay.check("10.1.2.3", "no-domain").startswith("501 5.1.3")
    assert relay.normalize("Postmaster") == "postmaster@local.test"


def test_the_received_header_names_one_recipient_and_never_several():
    one = received_header(
        helo="c.test",
        client_ip="192.0.2.1",
        hostname="mx.test",
        protocol=protocol_name(True, True),
        queue_id="Q1",
        recipients=["a@b.test"],
        when=0,
    )
    assert one == (
        b"Received: from c.test (unknown [192.0.2.1])\r\n"
        b"\tby mx.test (Elemta) with ESMTPS id Q1\r\n"
        b"\tfor <a@b.test>; Thu, 01 Jan 1970 00:00:00 +0000\r\n"
    )
    many = received_header(
        helo="evil\r\nBcc: x",
        client_ip="192.0.2.1",
        hostname="mx.test",
        protocol="ESMTP",
        queue_id="Q2",
        recipients=["a@b.test", "c@d.test"],
        when=0,
    )
    assert b"for <" not in many and b"id Q2;\r\n\tThu, 01 Jan 1970" in many
    assert many.count(b"\r\n") == 3 and b"evil??Bcc: x" in many


def test_header_edits_touch_only_the_header_section():
    msg = b"Subject: s\r\nX-Spam: yes\r\n\tmore\r\nTo: t\r\n\r\nX-Spam: body line\r\n"
    out = edit_headers(msg, [("X-New", "1")], ["x-spam"])
    assert out == b"X-New: 1\r\nSubject: s\r\nTo: t\r\n\r\nX-Spam: body line\r\n"
    assert edit_headers(b"", [], ["x"]) == b""
    assert edit_headers(b"\r\nX-Spam: b\r\n", [], ["x-spam"]) == b"\r\nX-Spam: b\r\n"


def test_a_self_signed_certificate_is_made_once_and_reused(tmp_path: Path):
    first = self_signed_pem(str(tmp_path), "mx.elemta.test")
    content = first.read_bytes()
    assert first.stat().st_mode & 0o777 == 0o600
    assert self_signed_pem(str(tmp_path), "mx.elemta.test").read_bytes() == content
    # a new host name gets a new certificate
    assert self_signed_pem(str(tmp_path), "other.test").read_bytes() != content


def test_a_configured_certificate_is_used(tmp_path: Path):
    pem = self_signed_pem(str(tmp_path / "elsewhere"), "mx.elemta.test")
    cfg = make_config(
        tmp_path, "nats://127.0.0.1:1", "127.0.0.1:1", {"ingress": {"tls_cert": str(pem)}}
    )
    assert isinstance(server_context(cfg), ssl.SSLContext)
    assert not (tmp_path / "var" / "tls").exists()
    bad = make_config(
        tmp_path, "nats://127.0.0.1:1", "127.0.0.1:1", {"ingress": {"tls_key": str(pem)}}
    )
    with pytest.raises(ValueError):
        server_context(bad)


def test_a_name_with_a_prefix_removes_only_the_fields_whose_value_starts_with_it():
    from elemta.ingress.transaction import edit_headers

    message = (
        b"Authentication-Results: mx.elemta.test; spf=pass\r\n"
        b"Authentication-Results: other.example;\r\n dkim=pass\r\n"
        b"authentication-results: MX.ELEMTA.TEST;\r\n\tdmarc=pass\r\n"
        b"Subject: hi\r\n\r\nAuthentication-Results: mx.elemta.test; in the body\r\n"
    )
    edited = edit_headers(message, [], ["Authentication-Results:mx.elemta.test"])
    assert edited == (
        b"Authentication-Results: other.example;\r\n dkim=pass\r\n"
        b"Subject: hi\r\n\r\nAuthentication-Results: mx.elemta.test; in the body\r\n"
    )
