"""The fast DATA preparation gives the very bytes aiosmtplib's own would."""

from __future__ import annotations

import random

from elemta.delivery import dataphase

ORIGINAL_NORMALIZE = dataphase._original_normalize


def _original_prepare(message: bytes) -> bytes:
    return dataphase.DotStuffer.pattern.sub(b"..", ORIGINAL_NORMALIZE(message))


def _fast_prepare(message: bytes) -> bytes:
    return dataphase.DotStuffer().sub(b"..", dataphase.normalize_line_endings(message))


def test_clean_and_dirty_messages_are_prepared_exactly_as_before():
    rng = random.Random(5321)
    alphabet = [b"a", b".", b"\r\n", b"\r", b"\n", b"..", b"\r\n.", b" "]
    for _ in range(3000):
        message = b"".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        assert _fast_prepare(message) == _original_prepare(message), message


def test_a_crlf_message_is_passed_through_without_copying_when_nothing_is_needed():
    message = b"Subject: x\r\n\r\nbody\r\n"
    assert dataphase.normalize_line_endings(message) is message


def test_a_leading_dot_and_dots_after_line_breaks_are_doubled():
    got = _fast_prepare(b".one\r\ntwo\r\n.three\r\n")
    assert got == b"..one\r\ntwo\r\n..three\r\n"
