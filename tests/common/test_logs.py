"""Log lines: one JSON object a line, whichever way they are written."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from elemta.common import logs


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    logs.setup_logging("ingress", "INFO")
    out = io.StringIO()
    handler = root.handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(out)
    yield out
    root.handlers[:], level = saved
    root.setLevel(level)
    logs._direct = None


def test_a_per_message_line_has_the_fields_of_a_logged_record(captured: io.StringIO) -> None:
    log = logging.getLogger("elemta.ingress.test")
    token = logs.queue_id.set("Q1")
    try:
        logs.info(log, "from=<a@b> queued as Q1", sender="a@b", size=10, hold=False)
        log.info("from=<a@b> queued as Q1", extra={"sender": "a@b", "size": 10, "hold": False})
    finally:
        logs.queue_id.reset(token)
    direct, logged = (json.loads(line) for line in captured.getvalue().splitlines())
    assert direct.keys() == logged.keys()
    for key in ("level", "service", "logger", "msg", "queue_id", "sender", "size", "hold"):
        assert direct[key] == logged[key]
    assert direct["ts"][:19] == logged["ts"][:19] and direct["ts"].endswith("Z")


def test_a_per_message_line_below_the_level_is_not_written(captured: io.StringIO) -> None:
    log = logging.getLogger("elemta.ingress.quiet")
    log.setLevel(logging.WARNING)
    try:
        logs.info(log, "nothing", size=1)
    finally:
        log.setLevel(logging.NOTSET)
    assert captured.getvalue() == ""


def test_a_per_message_line_reaches_other_handlers_too(
    captured: io.StringIO, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):
        logs.info(logging.getLogger("elemta.delivery"), "to=<b@c>, status=sent", code=250)
    assert [r.getMessage() for r in caplog.records] == ["to=<b@c>, status=sent"]
    assert caplog.records[0].code == 250  # type: ignore[attr-defined]
    assert json.loads(captured.getvalue())["code"] == 250
