"""Classification of replies and the wire details that need no server."""

from __future__ import annotations

from elemta.delivery.errors import Reply
from elemta.delivery.lmtp import dot_stuff


def test_reply_takes_its_enhanced_code_from_the_text() -> None:
    assert Reply.parse(550, "5.1.1 <bob@example.test>: no such user") == Reply(
        550, "5.1.1", "<bob@example.test>: no such user"
    )


def test_multiline_reply_joins_into_one_line_without_repeated_codes() -> None:
    reply = Reply.parse(452, "4.2.2 Mailbox full\n4.2.2 try again later")
    assert reply == Reply(452, "4.2.2", "Mailbox full try again later")
    assert reply.status == "deferred"


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


def test_dot_stuffing_doubles_leading_dots_and_terminates_the_message() -> None:
    assert dot_stuff(b"a\r\n.b\r\n..c\r\nd.\r\n") == b"a\r\n..b\r\n...c\r\nd.\r\n.\r\n"
    assert dot_stuff(b"bare\nlf\n.x") == b"bare\r\nlf\r\n..x\r\n.\r\n"
