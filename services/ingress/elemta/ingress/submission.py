"""What a submission server adds to a message from a user's mail program (RFC 6409
section 8.3): ``Message-ID`` and ``Date`` when they are missing, so that replies
thread and the message is dated even when the client forgot."""

from __future__ import annotations

import time
from email.utils import formatdate

__all__ = ["complete_headers"]


def _header_names(content: bytes) -> set[bytes]:
    end = content.find(b"\r\n\r\n")
    header = content if end < 0 else content[: end + 2]
    names = set()
    for line in header.split(b"\r\n"):
        if line[:1] in (b" ", b"\t") or b":" not in line:
            continue
        names.add(line.split(b":", 1)[0].strip().lower())
    return names


def complete_headers(
    content: bytes, hostname: str, queue_id: str, when: float | None = None
) -> bytes:
    """``content`` with ``Message-ID``/``Date`` prepended where it has none."""
    names = _header_names(content)
    added = b""
    if b"message-id" not in names:
        added += f"Message-ID: <{queue_id}@{hostname}>\r\n".encode("ascii", "replace")
    if b"date" not in names:
        stamp = formatdate(time.time() if when is None else when, localtime=False)
        added += f"Date: {stamp}\r\n".encode("ascii")
    return added + content
