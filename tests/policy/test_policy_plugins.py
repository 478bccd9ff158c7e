"""The plugin host: ordering, timeouts, failures, and entry-point discovery."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from elemta.policy.checks import Pipeline, Verdict
from elemta.policy.plugins import PluginHost, PluginSpec, hookimpl, load_plugin

MESSAGE = b"From: a@example.org\r\nSubject: hi\r\n\r\nhello\r\n"
SESSION: dict[str, Any] = {"client_ip": "192.0.2.1"}


class Recorder:
    def __init__(self, name: str, calls: list[str], verdict: Verdict | None = None) -> None:
        self.name, self.calls, self.verdict = name, calls, verdict

    @hookimpl
    async def check_data(
        self, session: dict[str, Any], sender: str, recipients: list[str], message: bytes
    ) -> Verdict | None:
        self.calls.append(self.name)
        return self.verdict


class Sleeper:
    @hookimpl
    async def check_data(
        self, session: dict[str, Any], sender: str, recipients: list[str], message: bytes
    ) -> Verdict | None:
        await asyncio.sleep(30)
        return None


class Broken:
    @hookimpl
    async def check_data(
        self, session: dict[str, Any], sender: str, recipients: list[str], message: bytes
    ) -> Verdict | None:
        raise ConnectionRefusedError("scanner down")


class Check:
    """A plain pipeline check, beside the host."""

    def __init__(self, name: str, calls: list[str]) -> None:
        self.name, self.calls = name, calls

    async def data(self, **kwargs: Any) -> Verdict | None:
        self.calls.append(self.name)
        return None


async def run(host: PluginHost) -> Verdict:
    v = await host.data(SESSION, "a@example.org", ["b@example.net"], MESSAGE)
    assert v is not None
    return v


async def test_plugins_run_by_order_lowest_first_whatever_the_list_order() -> None:
    calls: list[str] = []
    host = PluginHost(
        [
            PluginSpec("late", Recorder("late", calls), order=30),
            PluginSpec("early", Recorder("early", calls), order=10),
            PluginSpec("middle", Recorder("middle", calls), order=20),
        ]
    )
    assert (await run(host)).action == "accept"
    assert calls == ["early", "middle", "late"]
    assert host.names == ["early", "middle", "late"]


async def test_the_first_non_accept_verdict_wins_and_later_plugins_do_not_run() -> None:
    calls: list[str] = []
    reject = Verdict(action="reject", code=554, enhanced="5.7.1", reason="no")
    host = PluginHost(
        [
            PluginSpec("a", Recorder("a", calls, Verdict(add_headers=[("X-A", "1")])), order=1),
            PluginSpec("b", Recorder("b", calls, reject), order=2),
            PluginSpec("c", Recorder("c", calls), order=3),
        ]
    )
    v = await run(host)
    assert (v.action, v.code, v.enhanced) == ("reject", 554, "5.7.1")
    assert calls == ["a", "b"]
    assert v.add_headers == [("X-A", "1")]


async def test_accept_verdicts_headers_are_collected_in_order() -> None:
    calls: list[str] = []
    host = PluginHost(
        [
            PluginSpec("b", Recorder("b", calls, Verdict(add_headers=[("X-B", "2")])), order=2),
            PluginSpec("a", Recorder("a", calls, Verdict(add_headers=[("X-A", "1")])), order=1),
        ]
    )
    v = await run(host)
    assert v.action == "accept"
    assert v.add_headers == [("X-A", "1"), ("X-B", "2")]


async def test_a_plugin_sleeping_past_its_timeout_fails_closed_with_451_4_7_1() -> None:
    host = PluginHost([PluginSpec("slow", Sleeper(), timeout=0.1, fail="closed")])
    started = time.monotonic()
    v = await run(host)
    assert time.monotonic() - started < 2
    assert (v.action, v.code, v.enhanced) == ("tempfail", 451, "4.7.1")
    assert v.reason == "Content scanner unavailable, try again later"


async def test_a_plugin_sleeping_past_its_timeout_fails_open_and_the_next_plugin_runs() -> None:
    calls: list[str] = []
    host = PluginHost(
        [
            PluginSpec("slow", Sleeper(), order=1, timeout=0.1, fail="open"),
            PluginSpec("next", Recorder("next", calls), order=2),
        ]
    )
    assert (await run(host)).action == "accept"
    assert calls == ["next"]


async def test_the_service_keeps_answering_while_and_after_a_plugin_times_out() -> None:
    calls: list[str] = []
    host = PluginHost([PluginSpec("slow", Sleeper(), timeout=1.5, fail="closed")])
    kwargs: dict[str, Any] = {
        "session": SESSION,
        "sender": "a@example.org",
        "recipients": ["b@example.net"],
        "message": MESSAGE,
    }
    slow = asyncio.create_task(Pipeline([Check("other", calls), host]).run("data", **kwargs))
    await asyncio.sleep(0)
    # Meanwhile another session is served at once (the plugin only awaits).
    v = await asyncio.wait_for(Pipeline([Check("quick", calls)]).run("data", **kwargs), 1.0)
    assert v.action == "accept"
    assert not slow.done()
    assert (await slow).code == 451
    # And the host itself answers again afterwards.
    assert (await run(host)).code == 451
    assert calls == ["other", "quick"]


async def test_a_plugin_raising_fails_closed_with_451_or_open_with_accept() -> None:
    closed = await run(PluginHost([PluginSpec("broken", Broken(), fail="closed")]))
    assert (closed.action, closed.code, closed.enhanced) == ("tempfail", 451, "4.7.1")
    opened = await run(PluginHost([PluginSpec("broken", Broken(), fail="open")]))
    assert opened.action == "accept"


def test_a_fail_mode_other_than_open_or_closed_is_refused() -> None:
    with pytest.raises(ValueError):
        PluginSpec("x", Broken(), fail="maybe")


def test_a_plugin_without_a_coroutine_check_data_is_refused() -> None:
    class Sync:
        @hookimpl
        def check_data(
            self, session: dict[str, Any], sender: str, recipients: list[str], message: bytes
        ) -> None:
            return None

    class Nothing:
        pass

    with pytest.raises(TypeError):
        PluginHost([PluginSpec("sync", Sync())])
    with pytest.raises(TypeError):
        PluginHost([PluginSpec("nothing", Nothing())])


def test_an_unknown_plugin_name_is_a_lookup_error() -> None:
    with pytest.raises(LookupError):
        load_plugin("no-such-plugin-anywhere")


def test_clamav_is_built_in_and_fails_closed_by_default() -> None:
    spec = load_plugin("clamav", {"address": "127.0.0.1:1"}, order=5, timeout=3)
    assert (spec.name, spec.order, spec.timeout, spec.fail) == ("clamav", 5, 3, "closed")
    assert load_plugin("clamav", fail="open").fail == "open"


MODULE = """
from elemta.policy.checks import Verdict
from elemta.policy.plugins import hookimpl


class Tagger:
    def __init__(self, options):
        self.tag = options["tag"]

    @hookimpl
    async def check_data(self, session, sender, recipients, message):
        return Verdict(add_headers=[("X-Tag", self.tag)])


def factory(options):
    return Tagger(options)
"""


async def test_a_third_party_plugin_is_discovered_through_its_entry_point(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "elemta_tagger_plugin.py").write_text(MODULE)
    dist = tmp_path / "elemta_tagger-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: elemta-tagger\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[elemta.policy.plugins]\ntagger = elemta_tagger_plugin:factory\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        spec = load_plugin("tagger", {"tag": "seen"}, order=7)
        assert (spec.name, spec.order, spec.fail) == ("tagger", 7, "open")
        v = await run(PluginHost([spec]))
        assert v.add_headers == [("X-Tag", "seen")]
    finally:
        sys.modules.pop("elemta_tagger_plugin", None)
