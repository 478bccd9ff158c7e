"""SpamAssassin scanning against a real spamd (one for the whole module)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from elemta.policy.plugins.spamd import Spamd, SpamdError, parse_response

from support.dnsserver import free_port
from support.spamd import GTUBE, SpamdServer

SESSION = {"client_ip": "192.0.2.10", "helo": "mail.example.com"}
SENDER = "alice@example.com"
RCPTS = ["bob@example.net"]

NORMAL = (
    b"From: Alice <alice@example.com>\r\n"
    b"To: Bob <bob@example.net>\r\n"
    b"Subject: Lunch on Thursday\r\n"
    b"Date: Tue, 24 Nov 2026 12:00:00 +0000\r\n"
    b"Message-ID: <lunch-1@example.com>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=us-ascii\r\n"
    b"\r\n"
    b"Hi Bob,\r\n\r\nshall we meet for lunch on Thursday at noon?\r\n\r\nAlice\r\n"
)
SPAM = NORMAL.replace(b"Subject: Lunch on Thursday", b"Subject: Test spam").replace(
    b"Alice\r\n", b"Alice\r\n\r\n" + GTUBE.encode() + b"\r\n"
)


@pytest.fixture(scope="module")
def spamd() -> Iterator[SpamdServer]:
    server = SpamdServer().start()
    yield server
    server.stop()


def headers(v: object) -> dict[str, str]:
    return dict(getattr(v, "add_headers", []))


async def test_a_gtube_message_is_held_as_spam_by_default(spamd: SpamdServer) -> None:
    v = await Spamd(spamd.address, timeout=10).check_data(SESSION, SENDER, RCPTS, SPAM)
    assert v is not None
    assert v.action == "hold"
    h = headers(v)
    assert h["X-Spam-Flag"] == "YES"
    assert h["X-Spam-Status"].startswith("Yes, score=")
    assert "required=5.0" in h["X-Spam-Status"]
    assert "GTUBE" in h["X-Spam-Status"].partition("tests=")[2].split(",")


async def test_a_gtube_message_is_rejected_when_its_score_reaches_reject_score(
    spamd: SpamdServer,
) -> None:
    v = await Spamd(spamd.address, timeout=10, reject_score=20).check_data(
        SESSION, SENDER, RCPTS, SPAM
    )
    assert v is not None
    assert (v.action, v.code, v.enhanced, v.reason) == (
        "reject",
        550,
        "5.7.1",
        "Message rejected as spam",
    )
    assert headers(v)["X-Spam-Flag"] == "YES"


async def test_spam_below_reject_score_is_held_not_rejected(spamd: SpamdServer) -> None:
    v = await Spamd(spamd.address, timeout=10, reject_score=5000).check_data(
        SESSION, SENDER, RCPTS, SPAM
    )
    assert v is not None and v.action == "hold"


async def test_spam_is_accepted_with_its_headers_when_hold_is_off(spamd: SpamdServer) -> None:
    v = await Spamd(spamd.address, timeout=10, hold=False).check_data(SESSION, SENDER, RCPTS, SPAM)
    assert v is not None and v.action == "accept"
    assert headers(v)["X-Spam-Flag"] == "YES"


async def test_a_normal_message_is_not_spam(spamd: SpamdServer) -> None:
    v = await Spamd(spamd.address, timeout=10, reject_score=5).check_data(
        SESSION, SENDER, RCPTS, NORMAL
    )
    assert v is not None
    assert v.action == "accept"
    h = headers(v)
    assert h["X-Spam-Status"].startswith("No, score=")
    assert "X-Spam-Flag" not in h


@pytest.mark.parametrize("command", ["CHECK", "REPORT"])
async def test_check_and_report_commands_also_flag_gtube(spamd: SpamdServer, command: str) -> None:
    result = await Spamd(spamd.address, timeout=10, command=command).scan(SPAM)
    assert result.spam and result.score >= 1000 and result.required == 5.0
    assert result.symbols == []
    assert ("GTUBE" in result.report) == (command == "REPORT")


async def test_spamd_not_running_raises_a_clear_error_quickly() -> None:
    port = free_port()
    started = time.monotonic()
    with pytest.raises(SpamdError, match=rf"spamd at 127\.0\.0\.1:{port} unreachable"):
        await Spamd(f"127.0.0.1:{port}", timeout=5).check_data(SESSION, SENDER, RCPTS, NORMAL)
    assert time.monotonic() - started < 5


async def test_a_spamd_that_never_answers_is_bounded_by_the_timeout() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(10)
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        started = time.monotonic()
        with pytest.raises(SpamdError, match=r"did not answer within 0\.3s"):
            await Spamd(f"127.0.0.1:{port}", timeout=0.3).check_data(SESSION, SENDER, RCPTS, NORMAL)
        assert time.monotonic() - started < 2
    finally:
        server.close()


async def test_a_spamd_error_status_raises() -> None:
    async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"SPAMD/1.0 76 Bad header line: (EOF)\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(refuse, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(SpamdError, match="spamd answered with an error"):
            await Spamd(f"127.0.0.1:{port}", timeout=2).scan(NORMAL)
    finally:
        server.close()


def test_a_response_without_a_spam_header_is_a_protocol_error() -> None:
    with pytest.raises(SpamdError, match="no Spam header"):
        parse_response(b"SPAMD/1.1 0 EX_OK\r\nContent-length: 0\r\n\r\n")
    with pytest.raises(SpamdError, match="malformed status line"):
        parse_response(b"HTTP/1.1 200 OK\r\n\r\n")
    with pytest.raises(SpamdError, match="without an answer"):
        parse_response(b"")


async def test_messages_above_max_size_are_not_scanned() -> None:
    plugin = Spamd("127.0.0.1:1", timeout=1, max_size=10)
    assert (await plugin.check_data(SESSION, SENDER, RCPTS, NORMAL)) is None


async def test_the_plugin_host_loads_spamd_by_name_and_runs_it(spamd: SpamdServer) -> None:
    from elemta.policy.plugins import PluginHost, load_plugin

    spec = load_plugin("spamd", {"address": spamd.address, "timeout": 10, "reject_score": 20})
    assert isinstance(spec.plugin, Spamd) and spec.plugin.reject_score == 20.0
    host = PluginHost([spec])
    v = await host.data(session=SESSION, sender=SENDER, recipients=RCPTS, message=SPAM)
    assert v is not None and (v.action, v.code) == ("reject", 550)
