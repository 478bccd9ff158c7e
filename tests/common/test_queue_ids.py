"""Queue ids: 10 characters of milliseconds, then 10 random ones, Crockford base32."""

from __future__ import annotations

import re

from elemta.common.envelope import new_queue_id

CROCKFORD = re.compile(r"[0-9A-HJKMNP-TV-Z]{20}")


def test_queue_ids_sort_by_time_and_are_crockford_base32():
    earlier = new_queue_id(1_764_520_000.000)
    later = new_queue_id(1_764_520_000.001)
    assert CROCKFORD.fullmatch(earlier) and CROCKFORD.fullmatch(later)
    assert earlier < later
    # the time half is the milliseconds, most significant character first
    assert earlier[:10] == "01KBASCYG0"


def test_queue_ids_made_in_the_same_millisecond_differ():
    ids = {new_queue_id(1_764_520_000.0) for _ in range(10_000)}
    assert len(ids) == 10_000
    assert {i[:10] for i in ids} == {"01KBASCYG0"}
