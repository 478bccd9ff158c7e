"""Whether the message store's filesystem discards freed blocks online.

nats-server removes a block file of a stream once every message in it is gone,
which for ``ELEMTA_MESSAGES`` (emptied as mail is delivered) happens all the
time under load. On a filesystem mounted with online discard (``discard`` on
ext4 and XFS, ``discard`` or ``discard=sync`` on btrfs), each removal makes the
next journal commit send TRIM for the freed blocks, and the synced writes
queued behind that commit wait: measured in ``bench/README.md`` (sixth session),
the accept p99 at 80 % of peak was about twice as high with ``discard`` as
without on the same machine. Databases give the same advice: mount without
``discard`` and trim now and then (``fstrim.timer``). ``elemta run`` says so at
start; nothing changes the mount.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["discard_warning", "mount_of"]

MOUNTINFO = Path("/proc/self/mountinfo")
_SYNC_DISCARD = {"discard", "discard=sync"}


def _unescape(field: str) -> str:
    """Mount points in mountinfo have space, tab, newline and backslash as octal escapes."""
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def mount_of(path: Path, mountinfo: str) -> tuple[str, str, set[str]] | None:
    """The mount holding ``path``: its mount point, filesystem type and options
    (the mount's and the filesystem's), from the text of ``/proc/self/mountinfo``."""
    target = str(path.resolve())
    best: tuple[str, str, set[str]] | None = None
    for line in mountinfo.splitlines():
        fields = line.split()
        if "-" not in fields[6:]:
            continue
        dash = fields.index("-", 6)
        if len(fields) < dash + 4:
            continue
        point = _unescape(fields[4])
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and (best is None or len(point) >= len(best[0])):
            options = set(fields[5].split(",")) | set(fields[dash + 3].split(","))
            best = (point, fields[dash + 1], options)
    return best


def discard_warning(path: Path, mountinfo: Path = MOUNTINFO) -> str:
    """A line for the operator when ``path`` is on a filesystem mounted with
    online discard; '' otherwise, or when it cannot be told."""
    try:
        found = mount_of(path, mountinfo.read_text())
    except OSError:
        return ""
    if found is None or not found[2] & _SYNC_DISCARD:
        return ""
    point, fstype, _ = found
    return (
        f"the message store {path} is on {point} ({fstype}), mounted with online discard: "
        "synced writes wait behind the discards of every block nats-server removes, "
        "which doubled the accept latency tail under load; mount it without 'discard' "
        "and trim with fstrim.timer instead"
    )
