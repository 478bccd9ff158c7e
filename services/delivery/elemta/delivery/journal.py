"""The ends of attempts written down on local disk before they are stored in JetStream.

Between a destination's ``250`` and the stored end of that attempt (a history
record or a report, :mod:`.unrecorded`), a delivery process killed leaves the
message to be offered again, and it is delivered a second time: the copies
``bench/chaos`` counts as "killed after the 250". That window is the time it
takes to store the end: a round trip to nats-server and its synced write, about
10 ms on busy cores. A write to a local file takes microseconds and outlives the
process: the kernel holds the data whatever kills the process (not the loss of
the machine: nothing here is synced, which would cost what the store costs).

So the end of every attempt that delivered something is written here first, as
the report the queue would take (``elemta.outcome.<id>`` with its
``Nats-Msg-Id``), and marked settled once its store returned, stored or given
up (a live process handles a failed store itself). A delivery process that starts
takes over the files of processes that died and stores their unsettled reports
(:func:`take_over`) before it pulls any message: the queue ends those messages,
and when JetStream offers such a message again (its ack never came), the lookup
of :mod:`.redelivery` finds the report and acks it without a second attempt. A
report stored twice is harmless: the queue ends a message once, and a repeated
``Nats-Msg-Id`` is dropped as a duplicate.

Where: ``<server.state_dir>/journal``: in Kubernetes the pod's ``emptyDir``,
which a restarted container keeps; on one machine the supervisor's state
directory, shared by its delivery processes. A directory that cannot be written
leaves the journal off, with a warning; delivery goes on without it.

Each process writes its own file, held with ``flock`` (the kernel lets go of it
when the process dies, however it dies), so a file whose lock can be taken
belongs to no live process. A file is created under a temporary name and
renamed once locked, so that no one takes over a file about to be written. The
file starts anew every :data:`SEGMENT_BYTES`; an older one is removed once all
its entries are settled.

An entry: ``E <key> <queue id> <Nats-Msg-Id> <length>\\n`` and the report, then
``\\n``; settled: ``S <key>\\n``. A torn tail (the machine lost mid-write) ends
the reading.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import itertools
import logging
import os
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["SEGMENT_BYTES", "EndJournal", "Entry", "take_over", "unsettled"]

log = logging.getLogger(__name__)

SEGMENT_BYTES = 4 * 1024 * 1024  # a file starts anew after about this many bytes
SUFFIX = ".journal"


@dataclass(frozen=True)
class Entry:
    """An end to store: the report for ``elemta.outcome.<qid>`` and its Nats-Msg-Id."""

    qid: str
    msg_id: str
    report: bytes


class _Segment:
    """One file of this process's journal."""

    __slots__ = ("fd", "path", "pending", "size")

    def __init__(self, directory: Path) -> None:
        name = f"{os.getpid()}-{os.urandom(4).hex()}"
        temporary = directory / f".{name}.tmp"
        self.fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self.path = directory / f"{name}{SUFFIX}"
        os.rename(temporary, self.path)
        self.pending = 0
        self.size = 0

    def append(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view) :]
        self.size += len(data)

    def remove(self) -> None:
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        os.close(self.fd)


class EndJournal:
    """This process's ends not yet stored, on local disk."""

    def __init__(self, directory: Path, segment_bytes: int = SEGMENT_BYTES) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.segment_bytes = segment_bytes
        self._current = _Segment(directory)
        self._where: dict[int, _Segment] = {}
        self._keys = itertools.count(1)
        self.broken = False  # a write failed (disk full, say): the journal is off

    @classmethod
    def open(cls, directory: Path) -> EndJournal | None:
        """The journal in ``directory``; None (with a warning) when it cannot be written."""
        try:
            return cls(directory)
        except OSError as exc:
            log.warning(
                "no journal of delivered messages in %s (%s): a delivery "
                "process killed may deliver more of them again",
                directory,
                exc,
            )
            return None

    def write(self, entry: Entry) -> int:
        """Write ``entry`` down; the key to :meth:`settle` it with (0: not written)."""
        if self.broken:
            return 0
        key = next(self._keys)
        head = f"E {key} {entry.qid} {entry.msg_id} {len(entry.report)}\n".encode()
        segment = self._current
        try:
            segment.append(head + entry.report + b"\n")
        except OSError as exc:
            self._break(exc)
            return 0
        segment.pending += 1
        self._where[key] = segment
        if segment.size >= self.segment_bytes:
            try:
                self._current = _Segment(self.directory)
            except OSError as exc:
                self._break(exc)  # what is written stays, and is settled
                return key
            self._retire(segment)
        return key

    def settle(self, key: int) -> None:
        """The end written under ``key`` was stored, or its store is over."""
        segment = self._where.pop(key, None)
        if segment is None:
            return
        segment.pending -= 1
        if segment is not self._current:
            self._retire(segment)
            return
        try:
            segment.append(b"S %d\n" % key)
        except OSError as exc:
            self._break(exc)

    def _retire(self, segment: _Segment) -> None:
        """Remove an old file once nothing in it waits."""
        if segment.pending == 0:
            segment.remove()

    def _break(self, exc: OSError) -> None:
        log.error("journal of delivered messages off: %s", exc)
        self.broken = True

    def close(self) -> None:
        """On a stop: files whose ends are all settled go; a file with an end whose
        store had not returned (a drain cut short) stays for the next start."""
        for segment in {*self._where.values(), self._current}:
            if segment.pending == 0:
                segment.remove()
            else:
                os.close(segment.fd)
        self._where.clear()


def unsettled(data: bytes) -> list[Entry]:
    """The entries of a journal file that were never settled, in order."""
    entries: dict[int, Entry] = {}
    pos = 0
    try:
        while (nl := data.find(b"\n", pos)) >= 0:
            head = data[pos:nl].split(b" ")
            if head[0] == b"E" and len(head) == 5:
                end = nl + 1 + int(head[4])
                if data[end : end + 1] != b"\n":
                    break  # torn
                entries[int(head[1])] = Entry(
                    head[2].decode(), head[3].decode(), data[nl + 1 : end]
                )
                pos = end + 1
            elif head[0] == b"S" and len(head) == 2:
                entries.pop(int(head[1]), None)
                pos = nl + 1
            else:
                break
    except ValueError:
        pass  # torn in a number
    return list(entries.values())


def _orphans(directory: Path) -> Iterator[tuple[Path, list[Entry]]]:
    """The journal files of processes that died, locked, with their unsettled
    entries; each stays locked until the caller asks for the next."""
    for path in sorted(directory.glob(f"*{SUFFIX}")):
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            continue  # taken over by another
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # its process is alive
            if os.fstat(fd).st_nlink == 0:
                continue  # another took it over and removed it meanwhile
            with open(fd, "rb", closefd=False) as f:
                entries = unsettled(f.read())
            yield path, entries
        finally:
            os.close(fd)


async def take_over(directory: Path, store: Callable[[Entry], Awaitable[None]]) -> int:
    """Store the unsettled ends left by processes that died; how many.

    The ends of a file are stored together, so that a store that keeps failing
    (each tries for some seconds) holds the start up once per file, not once per
    end. A file is removed once all its ends are stored; when one fails, the file
    is left for the next start (its messages are attempted again meanwhile when
    they are offered, as they would be without a journal).
    """

    async def one(entry: Entry) -> None:
        await store(entry)
        log.info("%s: end stored from the journal of a process that died", entry.qid)

    count = 0
    for path, entries in _orphans(directory):
        failed = [
            r
            for r in await asyncio.gather(*map(one, entries), return_exceptions=True)
            if isinstance(r, BaseException)
        ]
        if failed:
            log.error("journal %s not taken over (%r); left for the next start", path, failed[0])
            continue
        count += len(entries)
        path.unlink(missing_ok=True)
    return count
