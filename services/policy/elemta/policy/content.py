"""The content checks that reload without a restart: plugins, then milters.

:func:`build_content` makes one generation of them from the configuration;
:class:`ContentStage` is the pipeline's hold on the current generation. A
reload builds the next generation completely (plugins loaded, their options
validated, worker processes started) before :meth:`ContentStage.swap` puts it
in place between two calls: a call already running finishes with the
generation it started with, which is closed once its last call is done.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import sys
from typing import Any

from elemta.common.config import Config

from .checks import Gathered, Verdict
from .milter import MilterAddress, MilterChain, MilterSettings
from .plugins import PluginHost
from .plugins.host import plugin_spec

__all__ = ["ContentChecks", "ContentStage", "build_content", "milter_settings"]

log = logging.getLogger(__name__)


class ContentChecks:
    """One generation: the plugin host (if any plugins) and the milters (if any)."""

    def __init__(self, plugins: PluginHost | None = None, milters: MilterChain | None = None):
        self.plugins = plugins
        self.milters = milters
        self.calls = 0
        self.idle = asyncio.Event()
        self.idle.set()

    def describe(self) -> str:
        plugins = ", ".join(self.plugins.names) if self.plugins else "none"
        milters = ", ".join(self.milters.names) if self.milters else "none"
        return f"plugins: {plugins}; milters: {milters}"

    async def data(
        self, session: dict[str, Any], sender: str, recipients: list[str], message: bytes
    ) -> Verdict | None:
        gathered = Gathered()
        for check in (self.plugins, self.milters):
            if check is None:
                continue
            verdict = await check.data(session, sender, recipients, message)
            if verdict is None:
                continue
            final = gathered.add(verdict)
            if final is not None:
                return final
        return gathered.result

    async def close(self) -> None:
        if self.plugins is not None:
            await self.plugins.close()


def milter_settings(cfg: Config) -> list[MilterSettings]:
    """Each configured milter with the policy-wide ``milter_*`` values filled in."""
    p = cfg.policy
    out = []
    for m in p.milters:
        out.append(
            MilterSettings(
                address=MilterAddress.parse(m.address),
                name=m.name,
                default_action=m.default_action or p.milter_default_action,
                protocol=m.protocol or p.milter_protocol,
                connect_timeout=m.connect_timeout or p.milter_connect_timeout,
                command_timeout=m.command_timeout or p.milter_command_timeout,
                content_timeout=m.content_timeout or p.milter_content_timeout,
                hostname=cfg.server.hostname,
            )
        )
    return out


def add_plugin_dirs(dirs: list[str]) -> None:
    """Put ``dirs`` first on the import path, so plugins installed there with
    ``pip install --target`` (a mounted volume, an init container) are found by
    their entry points, here and in isolated workers, which get this path."""
    for folder in reversed(dirs):
        if folder not in sys.path:
            sys.path.insert(0, folder)
    importlib.invalidate_caches()


async def build_content(cfg: Config) -> ContentChecks:
    """A new generation from ``cfg``; raises (naming the plugin or milter) if it cannot be."""
    add_plugin_dirs(cfg.policy.plugin_dirs)
    specs = [plugin_spec(p) for p in cfg.policy.plugins]
    host = PluginHost(specs) if specs else None
    if host is not None:
        try:
            await host.start()
        except BaseException:
            await host.close()
            raise
    milters = milter_settings(cfg)
    return ContentChecks(host, MilterChain(milters) if milters else None)


class ContentStage:
    """A pipeline check (``data`` stage) running the current :class:`ContentChecks`."""

    def __init__(self, checks: ContentChecks | None = None) -> None:
        self.current = checks or ContentChecks()

    async def data(self, **kwargs: Any) -> Verdict | None:
        checks = self.current
        checks.calls += 1
        checks.idle.clear()
        try:
            return await checks.data(**kwargs)
        finally:
            checks.calls -= 1
            if checks.calls == 0:
                checks.idle.set()

    def swap(self, checks: ContentChecks) -> ContentChecks:
        """Put ``checks`` in place for the next call; the generation it replaces."""
        old, self.current = self.current, checks
        return old

    @staticmethod
    async def retire(old: ContentChecks, grace: float = 300.0) -> None:
        """Close a replaced generation once its running calls are done."""
        try:
            await asyncio.wait_for(old.idle.wait(), grace)
        except TimeoutError:
            log.warning("closing replaced content checks with %d calls still running", old.calls)
        await old.close()

    async def close(self) -> None:
        await self.current.close()
