"""Plugins in worker processes: raising, hanging, spinning, allocating, dying."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from elemta.common.config import PluginSettings
from elemta.policy.plugins import PluginHost, PluginSpec, hookimpl
from elemta.policy.plugins.host import plugin_spec
from elemta.policy.plugins.isolation import PluginLoadError

from support.misbehaving import install

SESSION: dict[str, Any] = {"client_ip": "192.0.2.1"}


def message(how: str) -> bytes:
    return f"From: a@x\r\nX-Misbehave: {how}\r\n\r\nhi\r\n".encode()


@pytest.fixture
def installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.syspath_prepend(str(install(tmp_path)))
    return tmp_path


async def start(**kw: Any) -> PluginHost:
    settings = PluginSettings(
        name="misbehaving", isolation="process", fail="closed", memory_mb=256, **kw
    )
    host = PluginHost([plugin_spec(settings)])
    await host.start()
    return host


@pytest.fixture
async def isolated(installed: Path) -> AsyncIterator[PluginHost]:
    host = await start(timeout=3.0)
    yield host
    await host.close()


async def ask(host: PluginHost, how: str) -> Any:
    v = await host.data(SESSION, "a@x", ["b@y"], message(how))
    assert v is not None
    return v


def pid(verdict: Any) -> int:
    return int(dict(verdict.add_headers)["X-Worker-Pid"])


async def test_an_isolated_plugin_answers_from_its_own_process(isolated: PluginHost) -> None:
    first = pid(await ask(isolated, "fine"))
    assert first != os.getpid()
    assert pid(await ask(isolated, "fine")) == first  # the same worker serves again


async def test_a_raising_plugin_fails_closed_and_its_worker_keeps_serving(
    isolated: PluginHost,
) -> None:
    before = pid(await ask(isolated, "fine"))
    assert (await ask(isolated, "raise")).code == 451
    assert pid(await ask(isolated, "fine")) == before


@pytest.mark.parametrize("how", ["hang", "allocate", "exit"])
async def test_a_worker_that_hangs_allocates_or_dies_is_replaced_and_the_loop_goes_on(
    isolated: PluginHost, how: str
) -> None:
    before = pid(await ask(isolated, "fine"))
    ticks = 0

    async def heartbeat() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.05)
            ticks += 1

    beating = asyncio.create_task(heartbeat())
    started = time.monotonic()
    v = await ask(isolated, how)
    took = time.monotonic() - started
    beating.cancel()
    assert (v.action, v.code) == ("tempfail", 451)
    assert took < 3.0 + 2.0  # within the plugin's timeout
    assert ticks >= int(took / 0.05 / 4)  # the event loop kept running meanwhile
    after = pid(await ask(isolated, "fine"))  # a fresh worker answers
    assert after != before


async def test_a_worker_burning_cpu_is_stopped_by_its_cpu_limit_before_the_timeout(
    installed: Path, caplog: pytest.LogCaptureFixture
) -> None:
    host = await start(timeout=120.0, cpu_seconds=1.0)
    try:
        before = pid(await ask(host, "fine"))
        assert (await ask(host, "spin")).code == 451
        assert "killed by SIGXCPU" in caplog.text
        assert pid(await ask(host, "fine")) != before
    finally:
        await host.close()


async def test_a_bad_option_of_an_isolated_plugin_stops_the_load_naming_it(
    installed: Path,
) -> None:
    settings = PluginSettings(name="rspamd", isolation="process", options={"urll": "x"})
    host = PluginHost([plugin_spec(settings)])
    with pytest.raises(PluginLoadError, match="plugin rspamd: option 'urll'"):
        await host.start()
    await host.close()


class Slow:
    def __init__(self) -> None:
        self.running = 0
        self.most = 0

    @hookimpl
    async def check_data(
        self, session: dict[str, Any], sender: str, recipients: list[str], message: bytes
    ) -> None:
        self.running += 1
        self.most = max(self.most, self.running)
        await asyncio.sleep(0.3)
        self.running -= 1


async def test_a_concurrency_limit_queues_calls_and_the_wait_counts_against_the_timeout() -> None:
    slow = Slow()
    host = PluginHost([PluginSpec("slow", slow, concurrency=2, timeout=0.5, fail="closed")])
    verdicts = await asyncio.gather(
        *(host.data(SESSION, "a@x", ["b@y"], message("fine")) for _ in range(4))
    )
    assert slow.most == 2
    # two ran at once, two waited 0.3 s then ran 0.3 s: past the 0.5 s timeout
    assert sorted(v.code for v in verdicts if v is not None) == [0, 0, 451, 451]
