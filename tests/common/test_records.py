"""Building a record from what another process wrote: unknown fields left out and
said at debug level, once per record type and set of fields."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field

import pytest

from elemta.common.apikeys import ApiKey
from elemta.common.records import build
from elemta.common.suspensions import Suspension


@dataclass
class Sample:
    id: str
    size: int = 0
    tags: list[str] = field(default_factory=list)


def test_a_record_as_this_version_writes_it_is_built_as_it_is() -> None:
    assert build(Sample, {"id": "a", "size": 3}) == Sample("a", 3)


def test_fields_this_version_does_not_know_are_left_out_and_the_known_ones_kept() -> None:
    got = build(Sample, {"id": "a", "tags": ["x"], "colour": "red", "weight": 2})
    assert got == Sample("a", 0, ["x"])


def test_unknown_fields_are_told_at_debug_level_once_per_set_of_fields(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="elemta.common.records")
    for _ in range(3):
        build(Sample, {"id": "a", "shape": 1, "kind": 2})
    build(Sample, {"id": "b", "shape": 1})
    told = [r for r in caplog.records if r.name == "elemta.common.records"]
    assert [r.levelno for r in told] == [logging.DEBUG, logging.DEBUG]
    assert "Sample" in told[0].getMessage() and "kind, shape" in told[0].getMessage()
    assert told[1].getMessage().endswith(": shape")


def test_a_record_missing_a_field_it_needs_is_refused_even_with_unknown_ones() -> None:
    with pytest.raises(TypeError, match="id"):
        build(Sample, {"size": 1, "colour": "red"})


def test_a_record_that_is_not_an_object_is_refused() -> None:
    with pytest.raises(TypeError):
        build(Sample, ["a", 1])


@pytest.mark.parametrize(
    "record",
    [
        Suspension("example.test", "421 too many connections", 2e9, 1e9, "delivery-1"),
        ApiKey("k1", "backups", "operator", 1e9, "admin", 2e9, ["a@example.test"], "ab" * 32),
    ],
    ids=lambda r: type(r).__name__,
)
def test_records_kept_in_buckets_are_read_when_a_newer_version_added_fields(
    record: Suspension | ApiKey,
) -> None:
    data = json.dumps({**json.loads(record.encode()), "from_a_newer_version": 1}).encode()
    assert type(record).decode(data) == record
