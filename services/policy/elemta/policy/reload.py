"""Reloading the plugin and milter configuration without a restart.

SIGHUP, or a change of the configuration file (a Kubernetes ConfigMap update
swaps the mounted file's target; the file is looked at every
``policy.reload_check_interval`` seconds), makes the service read its
configuration again and hand it to ``apply``, which builds the next
generation of content checks and swaps it in between calls. A file that does
not load (a bad value, an unknown plugin, a bad plugin option) is refused with
its error in the log; the running configuration stays. Reloads run one at a
time.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import signal
from collections.abc import Awaitable, Callable

from prometheus_client import Counter

from elemta.common.config import Config, load_config

__all__ = ["Reloader"]

log = logging.getLogger(__name__)

RELOADS = Counter(
    "elemta_policy_config_reloads_total",
    "Configuration reloads (ok: applied; refused: the running one stays)",
    ["result"],
)


def _digest(path: str) -> str | None:
    try:
        with open(path, "rb") as fh:
            return hashlib.sha256(fh.read()).hexdigest()
    except OSError:
        return None


class Reloader:
    def __init__(
        self,
        path: str | None,
        apply: Callable[[Config], Awaitable[str]],
        interval: float = 0.0,
    ) -> None:
        self.path = path
        self.apply = apply
        self.interval = interval
        self.lock = asyncio.Lock()
        self.digest = _digest(path) if path else None
        self.tasks: set[asyncio.Task[bool]] = set()
        self.watcher: asyncio.Task[None] | None = None

    def install(self) -> None:
        """SIGHUP reloads; a watcher looks at the file every ``interval`` seconds."""
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, self.request, "SIGHUP")
        if self.path and self.interval > 0:
            self.watcher = asyncio.create_task(self._watch())

    def request(self, reason: str) -> None:
        task = asyncio.create_task(self.reload(reason))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _watch(self) -> None:
        assert self.path is not None
        stamp = None
        while True:
            await asyncio.sleep(self.interval)
            try:
                st = os.stat(self.path)  # follows the ConfigMap's symlinks
                now = (st.st_ino, st.st_mtime_ns, st.st_size)
            except OSError:
                continue
            if now == stamp:
                continue
            stamp = now
            if _digest(self.path) != self.digest:
                await self.reload(f"{self.path} changed")

    async def reload(self, reason: str) -> bool:
        """Read the configuration again and apply it; False if it was refused."""
        async with self.lock:
            digest = _digest(self.path) if self.path else None
            try:
                cfg = load_config(self.path)
                summary = await self.apply(cfg)
            except Exception as exc:  # noqa: BLE001 - refused, never fatal
                if digest is not None:
                    self.digest = digest  # do not retry the same bad file every interval
                RELOADS.labels("refused").inc()
                log.error("reload (%s) refused, the running configuration stays: %s", reason, exc)
                return False
            self.digest = digest
            RELOADS.labels("ok").inc()
            log.info("reloaded (%s): %s", reason, summary)
            return True

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        loop.remove_signal_handler(signal.SIGHUP)
        if self.watcher is not None:
            self.watcher.cancel()
        for task in list(self.tasks):
            task.cancel()
