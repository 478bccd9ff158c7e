"""The ClamAV plugin against a real clamd with a local EICAR signature."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from elemta.policy.checks import Verdict
from elemta.policy.plugins import PluginHost, load_plugin
from elemta.policy.plugins.clamav import ClamAV, ClamdError

from support.clamd import EICAR, SIGNATURE, ClamdServer
from support.dnsserver import free_port

SESSION: dict[str, Any] = {"client_ip": "192.0.2.1"}


def message(body: bytes) -> bytes:
    return (
        b"From: a@example.org\r\nTo: b@example.net\r\nSubject: test\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n" + body + b"\r\n"
    )


@pytest.fixture
def clamd(tmp_path: Path) -> Iterator[ClamdServer]:
    server = ClamdServer(tmp_path / "clamd")
    server.start()
    yield server
    server.stop()


async def scan(host: PluginHost, msg: bytes) -> Verdict:
    v = await host.data(SESSION, "a@example.org", ["b@example.net"], msg)
    assert v is not None
    return v


async def test_eicar_in_a_message_is_rejected_554_5_7_1_naming_the_virus(
    clamd: ClamdServer,
) -> None:
    host = PluginHost([load_plugin("clamav", {"address": clamd.address}, timeout=10)])
    v = await scan(host, message(b"Please find the test file:\r\n" + EICAR))
    assert (v.action, v.code, v.enhanced) == ("reject", 554, "5.7.1")
    assert v.reason.startswith(f"Message rejected: virus found ({SIGNATURE}")
    assert v.reason.endswith(")")


async def test_a_clean_message_is_accepted_with_x_virus_scanned(clamd: ClamdServer) -> None:
    host = PluginHost([load_plugin("clamav", {"address": clamd.address}, timeout=10)])
    v = await scan(host, message(b"Nothing to see here.\r\n" * 20000))  # several chunks
    assert v.action == "accept"
    assert v.add_headers == [("X-Virus-Scanned", "ClamAV")]


async def test_a_stopped_clamd_gives_451_4_7_1_by_default_and_accept_when_failing_open(
    clamd: ClamdServer,
) -> None:
    address = clamd.address
    clamd.stop()
    closed = await scan(PluginHost([load_plugin("clamav", {"address": address})]), message(EICAR))
    assert (closed.action, closed.code, closed.enhanced) == ("tempfail", 451, "4.7.1")
    assert closed.reason == "Content scanner unavailable, try again later"
    opened = PluginHost([load_plugin("clamav", {"address": address}, fail="open")])
    assert (await scan(opened, message(EICAR))).action == "accept"


async def test_a_refused_connection_raises_from_the_plugin_itself() -> None:
    with pytest.raises(OSError):
        await ClamAV(f"127.0.0.1:{free_port()}", timeout=2).scan(b"x")


async def test_a_clamd_error_reply_raises(tmp_path: Path) -> None:
    server = ClamdServer(tmp_path / "clamd", extra=["StreamMaxLength 1K"])
    server.start()
    try:
        with pytest.raises(ClamdError):
            await ClamAV(server.address, timeout=5).scan(b"x" * 100_000)
    finally:
        server.stop()


async def test_clamd_is_reached_over_a_unix_socket(tmp_path: Path) -> None:
    sock = tmp_path / "c.sock"
    server = ClamdServer(tmp_path / "clamd", extra=[f"LocalSocket {sock}"])
    server.start()
    try:
        assert await ClamAV(f"unix:{sock}", timeout=5).scan(message(EICAR)) is not None
        assert await ClamAV(f"unix:{sock}", timeout=5).scan(message(b"clean")) is None
    finally:
        server.stop()
