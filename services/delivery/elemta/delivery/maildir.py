"""Local delivery into Maildir (``local`` route).

Each recipient ``user@domain`` has the mailbox ``<maildir_root>/<domain>/<user>/``
with ``tmp``, ``new`` and ``cur``, created on first delivery (mode 0700). A
message is written to ``tmp`` under a name no other delivery can take
(``<seconds>.<pid>_<counter>.<host>``), flushed to disk with fsync, renamed into
``new`` and the directory itself fsynced, so that a message in ``new`` is always
complete and survives a crash: the classic Maildir protocol.

The stored copy starts with ``Return-Path: <sender>`` and ``Delivered-To:
<recipient>`` and has LF line endings, as mail readers expect of Maildir.
Names are lower-cased; a local part or domain that could escape the root
(``/``, a leading dot, NUL) is refused with 5.1.3. Disk I/O runs in a worker
thread, never in the event loop.
"""

from __future__ import annotations

import asyncio
import errno
import itertools
import os
import socket
import time
from pathlib import Path

from elemta.common.envelope import DeliveryJob, RecipientResult
from elemta.common.replies import Reply

from .outcome import Delivery

__all__ = ["MaildirTransport", "mailbox_path"]

_counter = itertools.count(1)


class BadMailbox(ValueError):
    pass


def _safe_part(part: str) -> str:
    if not part or part.startswith(".") or "/" in part or "\0" in part or len(part) > 255:
        raise BadMailbox(f"unusable mailbox name {part!r}")
    return part


def mailbox_path(root: Path, recipient: str) -> Path:
    """``<root>/<domain>/<localpart>`` for a recipient; raises ValueError for bad names."""
    local, at, domain = recipient.lower().rpartition("@")
    if not at:
        raise BadMailbox(f"no domain in {recipient!r}")
    return root / _safe_part(domain.rstrip(".")) / _safe_part(local)


def _unique_name(hostname: str) -> str:
    host = hostname.replace("/", r"\057").replace(":", r"\072")
    return f"{int(time.time())}.{os.getpid()}_{next(_counter)}.{host}"


def _write_message(box: Path, data: bytes, hostname: str) -> str:
    tmp_dir, new_dir = box / "tmp", box / "new"
    if not new_dir.is_dir():
        for sub in ("tmp", "new", "cur"):
            os.makedirs(box / sub, mode=0o700, exist_ok=True)
    name = _unique_name(hostname)
    tmp = tmp_dir / name
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    os.rename(tmp, new_dir / name)
    dfd = os.open(new_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    return name


class MaildirTransport:
    def __init__(self, root: Path, hostname: str | None = None) -> None:
        self.root = root
        self.hostname = hostname or socket.gethostname()  # unique per pod, unlike server.hostname

    async def deliver(self, job: DeliveryJob, body: bytes) -> Delivery:
        results = await asyncio.to_thread(self._deliver_all, job, body)
        return Delivery("maildir", results)

    def _deliver_all(self, job: DeliveryJob, body: bytes) -> list[RecipientResult]:
        text = body.replace(b"\r\n", b"\n")
        sender = job.sender.encode("utf-8", "replace")
        out: dict[str, RecipientResult] = {}
        for rcpt in job.recipients:
            if rcpt not in out:
                out[rcpt] = self._deliver_one(rcpt, sender, text)
        return [out[r] for r in job.recipients]

    def _deliver_one(self, rcpt: str, sender: bytes, text: bytes) -> RecipientResult:
        try:
            box = mailbox_path(self.root, rcpt)
        except BadMailbox as exc:
            return Reply(550, "5.1.3", str(exc)).result(rcpt)
        head = (
            b"Return-Path: <"
            + sender
            + b">\nDelivered-To: "
            + rcpt.encode("utf-8", "replace")
            + b"\n"
        )
        try:
            name = _write_message(box, head + text, self.hostname)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                return Reply(452, "4.2.2", f"mailbox {box} is full: {exc.strerror}").result(rcpt)
            return Reply(451, "4.3.0", f"cannot write to {box}: {exc.strerror or exc}").result(rcpt)
        return Reply(250, "2.0.0", f"delivered to maildir as {name}").result(rcpt)
