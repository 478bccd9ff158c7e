"""One reply type, one status vocabulary, one permanent/temporary error pair."""

from __future__ import annotations

import json

import pytest

from elemta.common.envelope import Outcome, RecipientResult
from elemta.common.replies import (
    PermanentError,
    Reply,
    ReplyError,
    Status,
    TemporaryError,
    with_enhanced_code,
)
from elemta.common.resolver import NoSuchDomain, NullMx, TemporaryDnsError


def test_reply_takes_its_enhanced_code_from_the_text() -> None:
    assert Reply.parse(550, "5.1.1 <bob@example.test>: no such user") == Reply(
        550, "5.1.1", "<bob@example.test>: no such user"
    )


def test_multiline_reply_joins_into_one_line_without_repeated_codes() -> None:
    reply = Reply.parse(452, "4.2.2 Mailbox full\n4.2.2 try again later")
    assert reply == Reply(452, "4.2.2", "Mailbox full try again later")
    assert reply.status == "deferred"


@pytest.mark.parametrize(
    "text", ["Ok\x0bqueued", "Ok\u2028queued", "  Ok\x85queued ", "Ok\r\n\r\nqueued", "Ok\tqueued"]
)
def test_a_reply_is_one_line_whatever_breaks_its_lines(text: str) -> None:
    # every line boundary Python knows splits, as in a reply of two lines
    reply = Reply.parse(250, text)
    assert reply.enhanced == "2.0.0"
    assert reply.text.splitlines() == [reply.text]
    assert reply.text.split() == text.split()


def test_a_one_line_reply_keeps_its_text_trimmed() -> None:
    assert Reply.parse(250, "  2.0.0 Ok: queued as X  ") == Reply(250, "2.0.0", "Ok: queued as X")
    assert Reply.parse(250, "   ") == Reply(250, "2.0.0", "")


def test_reply_without_enhanced_code_gets_one_from_its_class() -> None:
    assert Reply.parse(250, "OK") == Reply(250, "2.0.0", "OK")
    assert Reply.parse(451, "try later").enhanced == "4.0.0"
    assert Reply.parse(554, "go away").enhanced == "5.0.0"


def test_enhanced_code_of_another_class_than_the_reply_is_not_trusted() -> None:
    assert Reply.parse(451, "5.7.1 confused server") == Reply(451, "4.0.0", "confused server")


def test_status_follows_the_reply_class() -> None:
    assert [Reply.parse(c, "x").status for c in (250, 251, 421, 450, 550, 554)] == [
        "delivered",
        "delivered",
        "deferred",
        "deferred",
        "failed",
        "failed",
    ]
    unexpected = Reply.parse(354, "go ahead")
    assert (unexpected.status, unexpected.enhanced) == ("deferred", "4.5.0")


def test_our_own_replies_get_the_enhanced_code_of_their_meaning() -> None:
    assert with_enhanced_code("250 Ok") == "250 2.0.0 Ok"
    assert with_enhanced_code("452 Too many") == "452 4.3.1 Too many"
    assert with_enhanced_code("554 5.7.1 Relay access denied") == "554 5.7.1 Relay access denied"
    assert with_enhanced_code("354 End data with <CR><LF>.<CR><LF>").startswith("354 End")
    assert Reply.from_line("550 5.1.1 no such user") == Reply(550, "5.1.1", "no such user")
    assert Reply.from_line("421 closing") == Reply(421, "4.3.0", "closing")


def test_an_error_falls_on_the_side_its_reply_says() -> None:
    assert isinstance(ReplyError.of(Reply(550, "5.7.1", "no")), PermanentError)
    temporary = ReplyError.of(Reply(451, "4.4.3", "later"))
    assert isinstance(temporary, TemporaryError)
    assert str(temporary) == "451 4.4.3 later"
    assert temporary.reply.status is Status.DEFERRED


@pytest.mark.parametrize(
    ("error", "side", "reply"),
    [
        (NoSuchDomain("x.example: domain not found"), PermanentError, "550 5.1.2"),
        (NullMx("x.example takes no mail"), PermanentError, "556 5.1.10"),
        (TemporaryDnsError("x.example: timed out"), TemporaryError, "451 4.4.3"),
    ],
)
def test_dns_failures_are_mail_errors_with_their_reply(
    error: ReplyError, side: type[ReplyError], reply: str
) -> None:
    assert isinstance(error, side)
    assert str(error.reply).startswith(reply)


def test_statuses_travel_as_the_strings_stored_in_jetstream() -> None:
    result = Reply(550, "5.1.1", "no such user").result("bob@example.test")
    assert result == RecipientResult(
        "bob@example.test", Status.FAILED, 550, "5.1.1", "no such user"
    )
    outcome = Outcome("Q1", "mx:example.test", "example.test", 1, "mx", [result])
    assert json.loads(outcome.encode())["results"][0]["status"] == "failed"
    back = Outcome.decode(outcome.encode()).results[0]
    assert back.status is Status.FAILED
