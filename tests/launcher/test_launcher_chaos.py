"""A small chaos run: every kind of process killed once under load, nothing
accepted lost (``make chaos`` is the long run, with the figures)."""

from __future__ import annotations

from pathlib import Path

import pytest

from support.chaos import KINDS, Chaos


@pytest.mark.timeout(600)
def test_every_kind_of_process_killed_once_under_load_loses_no_accepted_message(
    tmp_path: Path,
) -> None:
    result = Chaos(tmp_path, messages=300, rounds=1, nodes=1, lease_time=3.0, seed=9).run()
    report = result.report()
    print("\n" + report)
    assert result.kills == dict.fromkeys(KINDS, 1), report
    assert result.accepted == 300, report
    assert result.drained, report
    assert result.lost == [], report
