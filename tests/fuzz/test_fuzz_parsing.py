"""Properties of the parsing functions, over generated input (Hypothesis).

``make test`` runs a few hundred examples each; ``make fuzz`` many more
(``ELEMTA_FUZZ_EXAMPLES``).
"""

from __future__ import annotations

import asyncio
import logging
import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from elemta.ingress.address import (
    AddressError,
    ParameterError,
    parse_parameters,
    parse_path,
    split_mailbox,
)
from elemta.ingress.arguments import Mail, Rcpt, read_mail, read_rcpt
from elemta.ingress.data import MARK, check_data, read_data, unstuff
from elemta.ingress.policy_client import decision_from_verdict
from elemta.ingress.replies import BARE_NEWLINE, with_enhanced_code
from elemta.ingress.text import PrintableLogs, clean_text, reply_line
from elemta.rpc.policy.v1 import policy_pb2 as pb

REPLY = re.compile(r"^[2-5]\d\d [245]\.\d{1,3}\.\d{1,3} [\x20-\x7e]*$")

# Text as aiosmtpd hands it over: any code point, octets that were not UTF-8 as
# surrogate escapes, and the bytes SMTP cares about made likely.
SMTP_CHARS = st.one_of(
    st.characters(codec=None),
    st.sampled_from(list('<>@[]:,."\\ %!+=-_') + ["\x00", "\r", "\n", "\x1b", "\udcff"]),
    st.characters(min_codepoint=0x20, max_codepoint=0x7E),
)
smtp_text = st.text(SMTP_CHARS, max_size=120)

ATEXT = st.text(
    st.sampled_from("abcdefghijklmnopqrstuvwxyzABCXYZ0123456789!#$%&'*+-/=?^_`{|}~."),
    min_size=1,
    max_size=20,
)
LABEL = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)
DOMAIN = st.lists(LABEL, min_size=1, max_size=4).map(".".join)
LITERAL = st.ip_addresses().map(lambda ip: f"[{ip}]" if ip.version == 4 else f"[IPv6:{ip}]")
QUOTED = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0x7E, exclude_characters='"\\'), max_size=15
).map(lambda t: f'"{t}"')
MAILBOX = st.builds(
    lambda local, domain: f"{local}@{domain}", st.one_of(ATEXT, QUOTED), st.one_of(DOMAIN, LITERAL)
)


@given(smtp_text)
def test_any_path_is_read_or_refused_with_address_error(text):
    try:
        mailbox, rest = parse_path(text, null=True, bare=("postmaster",))
    except AddressError:
        return
    assert mailbox.isprintable() and "\r" not in mailbox and "\n" not in mailbox
    assert mailbox == "" or mailbox.lower() == "postmaster" or split_mailbox(mailbox)


@given(MAILBOX, st.lists(st.one_of(DOMAIN, LITERAL), max_size=3))
def test_a_well_formed_mailbox_is_read_back_whatever_its_source_route(mailbox, route):
    prefix = ",".join(f"@{hop}" for hop in route) + (":" if route else "")
    assert parse_path(f"<{prefix}{mailbox}> SIZE=1") == (mailbox, "SIZE=1")


@given(MAILBOX, st.sampled_from(["<{}", "<{} SIZE=1", "{}>x", "<{}>>"]))
def test_a_path_with_a_broken_bracket_is_refused(mailbox, shape):
    try:
        parse_path(shape.format(mailbox))
    except AddressError:
        return
    raise AssertionError(f"taken: {shape.format(mailbox)!r}")


@given(smtp_text)
def test_any_parameter_list_is_read_or_refused_with_parameter_error(text):
    try:
        params = parse_parameters(text)
    except ParameterError:
        return
    for key, value in params.items():
        assert re.fullmatch(r"[A-Z0-9][A-Z0-9-]*", key)
        assert value is None or (value and value.isprintable() and " " not in value)


@given(
    st.dictionaries(
        st.from_regex(r"[A-Z0-9][A-Z0-9-]{0,8}", fullmatch=True),
        st.none() | st.from_regex(r"[\x21-\x3c\x3e-\x7e]{1,10}", fullmatch=True),
        max_size=5,
    )
)
def test_well_formed_parameters_are_read_back(params):
    text = " ".join(k if v is None else f"{k}={v}" for k, v in params.items())
    assert parse_parameters(text) == params


@given(smtp_text, st.booleans())
def test_mail_and_rcpt_arguments_give_a_value_or_a_permanent_refusal(text, extended):
    for got in (
        read_mail(f"FROM:{text}", extended, 1000),
        read_rcpt(f"TO:{text}", extended, True),
    ):
        if isinstance(got, str):
            assert REPLY.match(got) and got[0] == "5", got
        else:
            assert isinstance(got, (Mail, Rcpt))


LINES = st.lists(st.binary(max_size=30).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")))


@given(LINES)
def test_dot_stuffed_data_is_read_back_exactly(lines):
    content = b"".join(line + b"\r\n" for line in lines)
    stuffed = b"".join((b"." + line if line.startswith(b".") else line) + b"\r\n" for line in lines)
    assert unstuff(stuffed) == content
    assert check_data(stuffed + b".\r\n", 10**6, 10**6) == (content, "")


@given(LINES, st.integers(1, 40))
def test_data_says_whether_a_line_begins_with_a_dot_and_refuses_long_lines(lines, limit):
    stuffed = b"".join((b"." + line if line.startswith(b".") else line) + b"\r\n" for line in lines)
    content, reply = check_data(stuffed + b".\r\n", 10**6, limit)
    if any(len(line) > limit for line in lines):
        assert reply == "500 5.5.2 Line too long"
        return
    assert reply == ""
    # delivery relies on it: no dot line means the stored copy needs no dot-stuffing
    assert content.dot_lines is any(line.startswith(b".") for line in lines)


@given(st.binary(max_size=200))
def test_data_with_a_bare_cr_or_lf_is_always_refused(data):
    raw = data + b"\r\n.\r\n"
    content, reply = check_data(raw, 10**6, 10**6)
    bare = raw.count(b"\r") != raw.count(b"\r\n") or raw.count(b"\n") != raw.count(b"\r\n")
    assert (reply == BARE_NEWLINE) is bare
    assert not (reply == "" and (b"\r" in content.replace(b"\r\n", b"")))


@given(st.binary(max_size=300), st.binary(max_size=50), st.lists(st.integers(1, 40), max_size=30))
@settings(suppress_health_check=[HealthCheck.too_slow])
def test_data_ends_at_the_first_end_mark_however_it_is_cut_into_reads(body, after, cuts):
    stream = body + MARK + after  # DATA begins after an implicit CRLF
    whole = b"\r\n" + stream
    end = whole.find(MARK) + len(MARK)

    async def go() -> tuple[bytes | None, bytes]:
        reader = asyncio.StreamReader(limit=1001)
        pos = 0
        for n in cuts:
            reader.feed_data(stream[pos : pos + n])
            pos += n
        reader.feed_data(stream[pos:])
        reader.feed_eof()
        got = await read_data(reader, 10**6)
        return got, await reader.read()

    got, rest = asyncio.run(go())
    assert got == whole[2:end]
    assert rest == whole[end:]


@given(st.text(SMTP_CHARS, max_size=700))
def test_a_reply_line_is_always_printable_ascii_and_bounded(text):
    line = reply_line(with_enhanced_code(text))
    assert line.isascii() and line.isprintable() and len(line) <= 510


@given(st.sampled_from(["250", "451", "501", "554", "421"]), st.text(SMTP_CHARS, max_size=50))
def test_every_reply_gets_an_enhanced_code_of_its_class(code, text):
    line = with_enhanced_code(f"{code} {reply_line(text)}")
    assert re.match(rf"^{code} {code[0]}\.\d{{1,3}}\.\d{{1,3}}( |$)", line), line


@given(st.text(SMTP_CHARS, max_size=400), st.integers(0, 700), st.text(SMTP_CHARS, max_size=10))
def test_a_policy_refusal_is_one_printable_ascii_line_of_the_right_class(reason, code, enhanced):
    verdict = pb.Verdict(
        action=pb.ACTION_REJECT,
        smtp_code=code,
        enhanced_code=enhanced.encode("utf-8", "replace").decode(),
        reason=reason.encode("utf-8", "replace").decode(),
    )
    reply = decision_from_verdict(verdict).reply
    assert REPLY.match(reply) and reply[0] == "5", reply


@given(smtp_text, st.lists(smtp_text, max_size=3))
def test_client_text_in_a_log_line_never_splits_it(message, args):
    record = logging.LogRecord(
        "mail.log",
        logging.WARNING,
        "",
        0,
        "%r got %s" + " %s" * len(args),
        (1, message, *args),
        None,
    )
    PrintableLogs().filter(record)
    assert record.getMessage().isprintable()
    assert clean_text(message).isprintable()
