"""A plugin's worker process: ``python -m elemta.policy.plugins.worker``.

The policy service starts workers for a plugin configured with
``isolation = "process"`` (see :mod:`.isolation`) and talks to each over its
stdin and stdout in frames (a 4-byte big-endian length, then the bytes):

* first the service sends the plugin's name, options and limits (JSON); the
  worker sets its limits, loads the plugin, checks its options and answers
  ``{"ready": true}`` or ``{"error": "..."}``;
* then, per call, the session and envelope (JSON) and the message (bytes);
  the worker answers ``{"verdict": {...}}``, ``{"verdict": null}`` or
  ``{"error": "..."}``.

Limits (``resource.setrlimit``): the address space (``memory_mb``) for the
worker's life; CPU time (``cpu_seconds``) for each call, as a soft limit moved
forward before each one, so that a call burning CPU gets SIGXCPU and dies.
A plugin that runs out of memory makes the worker answer and exit, to be
replaced by a fresh one. The plugin's own prints go to stderr, never into the
protocol.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import resource
import struct
import sys
from dataclasses import asdict
from typing import Any, BinaryIO

__all__ = ["main", "read_frame", "write_frame"]


def read_frame(stream: BinaryIO) -> bytes | None:
    head = stream.read(4)
    if len(head) < 4:
        return None
    (length,) = struct.unpack("!I", head)
    data = stream.read(length)
    return data if len(data) == length else None


def write_frame(stream: BinaryIO, data: bytes) -> None:
    stream.write(struct.pack("!I", len(data)) + data)
    stream.flush()


def _cpu_used() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _limit_memory(megabytes: int) -> None:
    size = megabytes * 1024 * 1024
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        size = min(size, hard)
    resource.setrlimit(resource.RLIMIT_AS, (size, hard))


def _limit_cpu(seconds: float) -> None:
    """Move the soft CPU limit to ``seconds`` beyond what this process used so far."""
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    soft = math.ceil(_cpu_used() + seconds)
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))


def _verdict(v: Any) -> dict[str, Any] | None:
    if v is None:
        return None
    data = asdict(v)
    data.pop("changes", None)  # isolated plugins judge; they do not edit the envelope
    return data


def _die_with_parent() -> None:
    """Linux: SIGKILL this worker if the policy service dies, even mid-call."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, 9)  # PR_SET_PDEATHSIG, SIGKILL
    except (OSError, AttributeError):
        pass  # elsewhere, a worker leaves when its stdin closes


def main() -> int:
    _die_with_parent()
    # The protocol owns the real stdout; whatever the plugin prints goes to stderr.
    channel = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    incoming = sys.stdin.buffer
    first = read_frame(incoming)
    if first is None:
        return 1
    init = json.loads(first)
    sys.path[:0] = [p for p in init.get("path", []) if p not in sys.path]
    loop = asyncio.new_event_loop()
    try:
        _limit_memory(int(init["memory_mb"]))
        from .host import checked_options, find_factory

        factory = find_factory(init["name"])
        plugin = factory(checked_options(init["name"], factory, init.get("options") or {}))
        start = getattr(plugin, "start", None)
        if start is not None:
            loop.run_until_complete(start())
        call = plugin.check_data
    except Exception as exc:  # noqa: BLE001 - reported to the service, which refuses the load
        write_frame(channel, json.dumps({"error": str(exc) or repr(exc)}).encode())
        return 1
    write_frame(channel, b'{"ready": true}')
    cpu_seconds = float(init["cpu_seconds"])
    while True:
        head = read_frame(incoming)
        message = read_frame(incoming) if head is not None else None
        if head is None or message is None:
            return 0
        request = json.loads(head)
        _limit_cpu(cpu_seconds)
        try:
            verdict = loop.run_until_complete(call(message=message, **request))
            answer = json.dumps({"verdict": _verdict(verdict)}).encode()
        except MemoryError:
            write_frame(channel, b'{"error": "out of memory", "exit": true}')
            return 1
        except Exception as exc:  # noqa: BLE001 - the service applies the plugin's fail mode
            answer = json.dumps({"error": repr(exc)}).encode()
        write_frame(channel, answer)


if __name__ == "__main__":
    raise SystemExit(main())
