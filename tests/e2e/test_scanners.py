"""Content scanners answer at end of DATA: real clamd and real spamd behind policy."""

from __future__ import annotations

from pathlib import Path

import pytest

from support.clamd import EICAR, ClamdServer
from support.dnsserver import free_port
from support.spamd import SpamdServer

GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"


def _message(body: str) -> str:
    return f"From: a@client.test\r\nTo: bob@local.test\r\nSubject: scan me\r\n\r\n{body}\r\n"


@pytest.fixture
def clamd(tmp_path: Path):  # type: ignore[no-untyped-def]
    server = ClamdServer(tmp_path / "clamd")
    server.start()
    yield server
    server.stop()


def _send(stack, body: str) -> tuple[int, bytes]:  # type: ignore[no-untyped-def]
    with stack.smtp() as s:
        s.ehlo()
        s.mail("a@client.test")
        s.rcpt("bob@local.test")
        return s.data(_message(body))


def test_the_eicar_test_file_is_refused_by_the_real_clamd(stack_factory, clamd, wait_for_maildir):
    plugins = [{"name": "clamav", "options": {"address": clamd.address}}]
    stack = stack_factory({"policy": {"plugins": plugins}})
    code, text = _send(stack, EICAR.decode())
    assert code == 554 and text.startswith(b"5.7.1") and b"virus" in text, (code, text)
    assert _send(stack, "nothing to see")[0] == 250
    (clean,) = wait_for_maildir(stack.workdir / "var" / "mail", "bob@local.test")
    assert clean["X-Virus-Scanned"] == "ClamAV"


def test_a_dead_clamd_gives_451_not_a_crash(stack_factory):
    plugins = [
        {"name": "clamav", "timeout": 2.0, "options": {"address": f"127.0.0.1:{free_port()}"}}
    ]
    stack = stack_factory({"policy": {"plugins": plugins}})
    code, text = _send(stack, "hello")
    assert code == 451 and text.startswith(b"4.7.1"), (code, text)
    # the policy service is still there and still answering
    assert stack.processes["policy"].ready()
    code, _ = _send(stack, "hello again")
    assert code == 451


def test_a_gtube_message_is_refused_by_the_real_spamd(stack_factory):
    spamd = SpamdServer().start()
    try:
        plugins = [{"name": "spamd", "options": {"address": spamd.address, "reject_score": 100.0}}]
        stack = stack_factory({"policy": {"plugins": plugins}})
        code, text = _send(stack, GTUBE)
        assert code == 550 and text.startswith(b"5.7.1") and b"spam" in text, (code, text)
        assert _send(stack, "Lunch on Thursday?")[0] == 250
    finally:
        spamd.stop()


def test_rspamd_refuses_gtube_and_marks_clean_mail_with_its_result(
    stack_factory, rspamd_server, wait_for_maildir
):
    plugins = [{"name": "rspamd", "options": {"url": rspamd_server.url}}]
    stack = stack_factory({"policy": {"plugins": plugins}})
    code, text = _send(stack, GTUBE)
    assert (code, text) == (554, b"5.7.1 Gtube pattern"), (code, text)
    assert _send(stack, "Lunch on Thursday?")[0] == 250
    (clean,) = wait_for_maildir(stack.workdir / "var" / "mail", "bob@local.test")
    assert clean["X-Rspamd-Result"].startswith("no action; score=")
    assert clean["X-Spamd-Bar"] is not None
