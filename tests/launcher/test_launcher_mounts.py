"""The warning about a message store on a filesystem with online discard."""

from __future__ import annotations

from pathlib import Path

from elemta.launcher.mounts import discard_warning, mount_of

MOUNTINFO = """\
22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard,resv_strict
40 27 254:1 / /var/lib/elemta rw,noatime - xfs /dev/vdb rw,attr2,inode64
41 27 254:2 / /srv/mail\\040store rw,relatime - btrfs /dev/vdc rw,discard=async,ssd
"""


def _written(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mountinfo"
    path.write_text(text)
    return path


def test_the_mount_holding_a_path_is_the_longest_mount_point_above_it() -> None:
    assert mount_of(Path("/var/lib/elemta/nats"), MOUNTINFO)[:2] == ("/var/lib/elemta", "xfs")
    assert mount_of(Path("/var/lib/elemtax"), MOUNTINFO)[:2] == ("/", "ext4")
    assert mount_of(Path("/srv/mail store/nats"), MOUNTINFO)[:2] == ("/srv/mail store", "btrfs")


def test_a_store_on_a_filesystem_with_online_discard_is_warned_about(tmp_path: Path) -> None:
    warning = discard_warning(Path("/tmp/elemta/nats"), _written(tmp_path, MOUNTINFO))
    assert "mounted with online discard" in warning
    assert "fstrim" in warning


def test_no_warning_without_discard_or_with_asynchronous_discard(tmp_path: Path) -> None:
    info = _written(tmp_path, MOUNTINFO)
    assert discard_warning(Path("/var/lib/elemta/nats"), info) == ""
    assert discard_warning(Path("/srv/mail store/nats"), info) == ""


def test_no_warning_when_the_mounts_cannot_be_read(tmp_path: Path) -> None:
    assert discard_warning(Path("/tmp"), tmp_path / "missing") == ""


def test_this_machines_root_is_found_in_its_own_mount_table() -> None:
    found = mount_of(Path("/"), Path("/proc/self/mountinfo").read_text())
    assert found is not None and found[0] == "/"
