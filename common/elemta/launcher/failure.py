"""The one error the launcher reports to the user (exit status 1)."""

from __future__ import annotations


class Failure(Exception):
    """Something did not start or stopped on its own; the message says what."""
