"""The generated gRPC code in common/elemta/rpc is what `make proto` makes now."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from support.stack import ROOT


def test_generated_code_matches_the_contracts_in_proto(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "proto", tmp_path / "proto")
    shutil.copytree(ROOT / "tools", tmp_path / "tools")
    subprocess.run(
        ["bash", "tools/proto_codegen.sh"],
        cwd=tmp_path,
        env={"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"},
        check=True,
        timeout=120,
    )
    fresh = tmp_path / "common" / "elemta" / "rpc"
    committed = ROOT / "common" / "elemta" / "rpc"
    names = sorted(p.relative_to(fresh) for p in fresh.rglob("*") if p.is_file())
    assert names == sorted(
        p.relative_to(committed)
        for p in committed.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    )
    stale = [n for n in names if (fresh / n).read_bytes() != (committed / n).read_bytes()]
    assert not stale, f"run `make proto`: {stale} differ from proto/"
