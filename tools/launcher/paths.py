"""Where the shared code and the services live, for the launcher and its children."""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def python_path() -> list[str]:
    """Where the shared code and every service live (as the Makefile sets PYTHONPATH)."""
    services = ROOT / "services"
    dirs = sorted(p for p in services.iterdir() if p.is_dir()) if services.is_dir() else []
    return [str(p) for p in (ROOT / "common", *dirs, ROOT / "operator")]


def import_paths() -> str:
    entries = python_path()
    for entry in reversed(entries):
        if entry not in sys.path:
            sys.path.insert(0, entry)
    current = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return os.pathsep.join(entries + [p for p in current if p not in entries])
