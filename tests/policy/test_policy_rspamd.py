"""The rspamd plugin against a real rspamd: actions, symbols, milter headers, failures."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest

from elemta.policy.plugins import PluginHost, load_plugin
from elemta.policy.plugins.host import PluginOptionError
from elemta.policy.plugins.rspamd import verdict_from_result

from support.dnsserver import free_port
from support.rspamd import RspamdServer

GTUBE = b"XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
SESSION: dict[str, Any] = {"client_ip": "127.0.0.1", "helo": "client.test", "queue_id": "Q1"}


def message(body: bytes) -> bytes:
    return (
        b"From: a@example.org\r\nTo: b@example.net\r\nSubject: lunch\r\n"
        b"Date: Mon, 30 Nov 2026 10:00:00 +0000\r\nMessage-ID: <1@example.org>\r\n\r\n"
        + body
        + b"\r\n"
    )


async def scan(host: PluginHost, body: bytes) -> Any:
    await host.start()
    try:
        return await host.data(SESSION, "a@example.org", ["b@example.net"], message(body))
    finally:
        await host.close()


async def test_gtube_is_rejected_with_rspamds_message(rspamd_server: RspamdServer) -> None:
    host = PluginHost([load_plugin("rspamd", {"url": rspamd_server.url})])
    v = await scan(host, GTUBE)
    assert (v.action, v.code, v.enhanced, v.reason) == ("reject", 554, "5.7.1", "Gtube pattern")
    assert v.notes["rspamd"]["action"] == "reject"
    assert "GTUBE" in v.notes["rspamd"]["symbols"]


async def test_clean_mail_gets_the_result_header_rspamds_headers_and_its_symbols(
    rspamd_server: RspamdServer,
) -> None:
    host = PluginHost([load_plugin("rspamd", {"url": rspamd_server.url})])
    v = await scan(host, b"Lunch on Thursday?")
    assert v.action == "accept"
    headers = dict(v.add_headers)
    assert headers["X-Rspamd-Result"].startswith("no action; score=")
    assert "MIME_GOOD(" in headers["X-Rspamd-Result"]  # a symbol that fired
    assert "X-Spamd-Bar" in headers  # asked for by rspamd's milter_headers
    assert "X-Spamd-Bar" in v.remove_headers  # and any copy from outside dropped
    assert v.notes["rspamd"]["symbols"]["MIME_GOOD"] <= 0


async def _real(url: str, settings: dict[str, Any]) -> dict[str, Any]:
    """rspamd's own answer with per-request settings that force an action."""
    headers = {"Settings": json.dumps(settings), "IP": "127.0.0.1"}
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{url}/checkv2", data=message(b"hello"), headers=headers) as r:
            result: dict[str, Any] = await r.json(content_type=None)
            return result


ONLY = {"reject": None, "add header": None, "greylist": None, "rewrite subject": None}


async def test_rspamds_milder_actions_map_as_its_milter_applies_them(
    rspamd_server: RspamdServer,
) -> None:
    rewrite = await _real(rspamd_server.url, {"actions": {**ONLY, "rewrite subject": -50}})
    v = verdict_from_result(rewrite)
    assert v.action == "accept"
    assert ("Subject", "*** SPAM *** lunch") in v.add_headers and "Subject" in v.remove_headers
    assert ("X-Spam", "Yes") in v.add_headers
    added = verdict_from_result(
        await _real(rspamd_server.url, {"actions": {**ONLY, "add header": -50}})
    )
    assert added.action == "accept" and ("X-Spam", "Yes") in added.add_headers
    grey = await _real(rspamd_server.url, {"actions": {**ONLY, "greylist": -50}})
    assert (verdict_from_result(grey).code, verdict_from_result(grey).enhanced) == (451, "4.7.1")
    assert verdict_from_result(grey, greylist=False).action == "accept"


def test_soft_reject_is_a_451_with_rspamds_message() -> None:
    v = verdict_from_result(
        {"action": "soft reject", "score": 1.0, "messages": {"smtp_message": "Ratelimited"}}
    )
    assert (v.action, v.code, v.enhanced, v.reason) == ("tempfail", 451, "4.7.1", "Ratelimited")


async def test_an_unreachable_rspamd_fails_open_by_default_or_closed_when_asked() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    assert (await scan(PluginHost([load_plugin("rspamd", {"url": url})]), b"hi")).action == (
        "accept"
    )
    closed = PluginHost([load_plugin("rspamd", {"url": url}, fail="closed")])
    assert (await scan(closed, b"hi")).code == 451


@pytest.mark.parametrize(
    ("name", "options", "named"),
    [
        ("rspamd", {"urll": "http://x"}, "plugin rspamd: option 'urll'"),
        ("rspamd", {"timeout": "soon"}, "plugin rspamd: option 'timeout'"),
        ("clamav", {"adress": "x:1"}, "plugin clamav: option 'adress'"),
        ("spamd", {"command": "EAT"}, "plugin spamd: option 'command'"),
    ],
)
def test_a_bad_plugin_option_stops_the_load_naming_plugin_and_key(
    name: str, options: dict[str, Any], named: str
) -> None:
    with pytest.raises(PluginOptionError) as err:
        load_plugin(name, options)
    assert named in str(err.value)
