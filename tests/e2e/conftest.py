"""End-to-end helpers: read Maildirs and wait for files to appear."""

from __future__ import annotations

import email
import email.policy
import time
from email.message import EmailMessage
from pathlib import Path

import pytest


def maildir_messages(root: Path, address: str) -> list[EmailMessage]:
    local, _, domain = address.partition("@")
    new = root / domain / local / "new"
    if not new.is_dir():
        return []
    return [
        email.message_from_bytes(p.read_bytes(), policy=email.policy.default)  # type: ignore[misc]
        for p in sorted(new.iterdir())
    ]


def wait_maildir(
    root: Path, address: str, count: int = 1, timeout: float = 30.0
) -> list[EmailMessage]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = maildir_messages(root, address)
        if len(found) >= count:
            return found
        time.sleep(0.1)
    raise AssertionError(
        f"{address}: expected {count} messages in {root}, found {len(maildir_messages(root, address))}"
    )


@pytest.fixture
def wait_for_maildir():  # type: ignore[no-untyped-def]
    return wait_maildir
