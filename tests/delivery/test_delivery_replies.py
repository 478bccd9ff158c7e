"""The wire details of delivery that need no server."""

from __future__ import annotations

from elemta.delivery.lmtp import dot_stuff


def test_dot_stuffing_doubles_leading_dots_and_terminates_the_message() -> None:
    assert dot_stuff(b"a\r\n.b\r\n..c\r\nd.\r\n") == b"a\r\n..b\r\n...c\r\nd.\r\n.\r\n"
    assert dot_stuff(b"bare\nlf\n.x") == b"bare\r\nlf\r\n..x\r\n.\r\n"
