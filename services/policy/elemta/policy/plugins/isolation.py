"""Plugins in worker processes: a crash, a hang or a memory leak stays there.

A plugin configured with ``isolation = "process"`` runs in ``workers`` child
processes (:mod:`.worker`), each with an address-space limit and a CPU-time
limit per call. The policy service hands each call to an idle worker and
waits within the plugin's timeout (the host's ``asyncio.wait_for``). A worker
that does not answer in time is killed; one that dies — SIGXCPU past its CPU
limit, out of memory, a crash — is replaced by a fresh one. Either way the
call fails and the plugin's ``fail`` mode decides, while the service, its
event loop and the other plugins go on.

The plugin is imported only in its workers: its options are checked there, at
start, and a bad one stops the load with the worker's message.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import struct
import sys
from typing import Any

from prometheus_client import Counter

from ..checks import ACCEPT, DISCARD, HOLD, REJECT, TEMPFAIL, Verdict
from .host import hookimpl

__all__ = ["PluginLoadError", "WorkerDied", "WorkerPool"]

log = logging.getLogger(__name__)

RESTARTS = Counter(
    "elemta_policy_plugin_worker_restarts_total",
    "Plugin worker processes replaced after they died, hung or ran out of a limit",
    ["plugin"],
)
MAX_ANSWER = 16 * 1024 * 1024
ACTIONS = frozenset({ACCEPT, REJECT, TEMPFAIL, HOLD, DISCARD})


class PluginLoadError(RuntimeError):
    """A worker could not load its plugin; the message says why."""


class WorkerDied(RuntimeError):
    """The worker ended or broke the protocol during a call."""


class _Worker:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    async def send(self, *frames: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"".join(struct.pack("!I", len(f)) + f for f in frames))
        await self.proc.stdin.drain()

    async def receive(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        try:
            head = await self.proc.stdout.readexactly(4)
            (length,) = struct.unpack("!I", head)
            if length > MAX_ANSWER:
                raise WorkerDied(f"answer of {length} bytes")
            answer: dict[str, Any] = json.loads(await self.proc.stdout.readexactly(length))
            return answer
        except asyncio.IncompleteReadError:
            code = await self.proc.wait()
            why = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit status {code}"
            raise WorkerDied(f"worker ended ({why})") from None
        except ValueError as exc:
            raise WorkerDied(f"worker sent a broken answer: {exc}") from None

    def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()

    async def reap(self) -> None:
        self.kill()
        try:
            await asyncio.wait_for(self.proc.wait(), 5)
        except TimeoutError:
            log.warning("plugin worker %s did not exit", self.proc.pid)


class WorkerPool:
    """The plugin as the host sees it: ``check_data`` forwarded to a worker."""

    def __init__(
        self,
        name: str,
        options: dict[str, Any],
        *,
        workers: int = 1,
        cpu_seconds: float = 10.0,
        memory_mb: int = 512,
        start_timeout: float = 30.0,
    ) -> None:
        self.name = name
        # The worker sees the modules this process sees: its sys.path travels with the
        # init message (third-party plugins installed into a directory on it included).
        self.init = json.dumps(
            {
                "name": name,
                "options": options,
                "cpu_seconds": cpu_seconds,
                "memory_mb": memory_mb,
                "path": [p for p in sys.path if p],
            }
        ).encode()
        self.size = workers
        self.start_timeout = start_timeout
        self.idle: asyncio.Queue[_Worker] = asyncio.Queue()
        self.all: set[_Worker] = set()
        self.closed = False
        self._replacing: set[asyncio.Task[None]] = set()

    async def _spawn(self) -> _Worker:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "elemta.policy.plugins.worker",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        worker = _Worker(proc)
        self.all.add(worker)
        try:
            await worker.send(self.init)
            answer = await asyncio.wait_for(worker.receive(), self.start_timeout)
        except (WorkerDied, TimeoutError, OSError) as exc:
            await self._drop(worker)
            raise PluginLoadError(f"plugin {self.name}: worker did not start: {exc}") from None
        if not answer.get("ready"):
            await self._drop(worker)
            raise PluginLoadError(str(answer.get("error") or f"plugin {self.name}: not ready"))
        return worker

    async def _drop(self, worker: _Worker) -> None:
        self.all.discard(worker)
        await worker.reap()

    async def start(self) -> None:
        """Start every worker; the first failure (a bad option, say) is raised."""
        for _ in range(self.size):
            self.idle.put_nowait(await self._spawn())

    async def _replace(self) -> None:
        delay = 0.5
        while not self.closed:
            try:
                worker = await self._spawn()
            except PluginLoadError as exc:
                log.error("plugin %s: cannot replace a worker: %s", self.name, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
                continue
            if self.closed:
                await self._drop(worker)
                return
            RESTARTS.labels(self.name).inc()
            self.idle.put_nowait(worker)
            return

    def _lost(self, worker: _Worker) -> None:
        """A worker is gone (killed or dead): reap it and start another."""
        task = asyncio.ensure_future(self._lost_async(worker))
        self._replacing.add(task)
        task.add_done_callback(self._replacing.discard)

    async def _lost_async(self, worker: _Worker) -> None:
        await self._drop(worker)
        await self._replace()

    @hookimpl
    async def check_data(
        self, session: dict[str, Any], sender: str, recipients: list[str], message: bytes
    ) -> Verdict | None:
        worker = await self.idle.get()
        request = json.dumps({"session": session, "sender": sender, "recipients": recipients})
        try:
            await worker.send(request.encode(), message)
            answer = await worker.receive()
        except BaseException as exc:  # a timeout (cancelled) or a death: the worker goes
            if isinstance(exc, WorkerDied):
                log.warning("plugin %s: %s; starting another", self.name, exc)
            elif isinstance(exc, asyncio.CancelledError):
                log.warning("plugin %s: worker killed after its timeout", self.name)
            worker.kill()
            self._lost(worker)
            if isinstance(exc, OSError):
                raise WorkerDied(f"worker unreachable: {exc}") from None
            raise
        if answer.get("exit"):
            self._lost(worker)
        else:
            self.idle.put_nowait(worker)
        if "error" in answer:
            raise RuntimeError(f"plugin {self.name}: {answer['error']}")
        data = answer.get("verdict")
        if data is None:
            return None
        if data.get("action") not in ACTIONS:
            raise RuntimeError(f"plugin {self.name}: unknown action {data.get('action')!r}")
        return Verdict(
            action=data.get("action", "accept"),
            code=int(data.get("code") or 0),
            enhanced=str(data.get("enhanced") or ""),
            reason=str(data.get("reason") or ""),
            add_headers=[(str(n), str(v)) for n, v in data.get("add_headers") or []],
            remove_headers=[str(n) for n in data.get("remove_headers") or []],
            notes=dict(data.get("notes") or {}),
        )

    async def close(self) -> None:
        self.closed = True
        for task in list(self._replacing):
            task.cancel()
        for worker in list(self.all):
            if worker.proc.stdin is not None:
                worker.proc.stdin.close()
        await asyncio.gather(*(self._drop(w) for w in list(self.all)), return_exceptions=True)
