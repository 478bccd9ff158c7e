"""The records that travel between services, as a process of an older version reads
what a newer one wrote during a rolling upgrade: fields it does not know are left
out, every field it knows arrives intact."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from elemta.common.envelope import (
    DeliveryJob,
    Envelope,
    FirstAttempt,
    Outcome,
    RecipientResult,
    new_queue_id,
)

NEWER = {"from_a_newer_version": {"nested": [1, 2]}, "another_new_field": "x"}


def with_newer_fields(data: bytes | str, **inside: Any) -> bytes:
    """``data`` (a JSON object) as a newer version would write it: with fields this
    version does not know, at the top and in the nested records named in ``inside``."""
    record = json.loads(data)
    record.update(NEWER)
    for key, update in inside.items():
        update(record[key])
    return json.dumps(record).encode()


def envelope() -> Envelope:
    return Envelope(
        new_queue_id(),
        "alice@sender.test",
        ["bob@example.test", "carol@example.test"],
        time.time(),
        client_ip="192.0.2.1",
        client_helo="client.test",
        size=1234,
        smtputf8=True,
        dsn_ret="HDRS",
        dsn_notify={"bob@example.test": "SUCCESS,FAILURE"},
        deadline=time.time() + 30,
        priority=3,
        wire_ready=True,
    )


def outcome(qid: str) -> Outcome:
    return Outcome(
        id=qid,
        dest="mx:example.test",
        domain="example.test",
        attempt=2,
        host="mx.example.test[192.0.2.25]:25",
        results=[
            RecipientResult("bob@example.test", "delivered", 250, "2.0.0", "Ok", dsn_passed=True),
            RecipientResult("carol@example.test", "deferred", 451, "4.3.0", "try later"),
        ],
        worker="delivery-1",
        finished_at=time.time(),
        not_before=time.time() + 60,
    )


def test_an_envelope_from_a_newer_version_decodes_with_every_known_field_intact() -> None:
    env = envelope()
    header = with_newer_fields(env.to_header()).decode()
    assert Envelope.from_header(header) == env


def test_a_delivery_job_from_a_newer_queue_decodes_with_every_known_field_intact() -> None:
    job = DeliveryJob(
        new_queue_id(),
        "smtp:relay.test:2525:1",
        {"kind": "smtp", "host": "relay.test", "port": 2525, "mx_lookup": True},
        "example.test",
        "alice@sender.test",
        ["bob@example.test"],
        42,
        attempt=3,
        dsn_orcpt={"bob@example.test": "rfc822;bob@example.test"},
        priority=-2,
        wire_ready=True,
    )
    assert DeliveryJob.decode(with_newer_fields(job.encode())) == job


def test_an_outcome_from_a_newer_delivery_decodes_with_every_known_field_intact() -> None:
    out = outcome(new_queue_id())

    def newer_results(results: list[dict[str, Any]]) -> None:
        for r in results:
            r.update(NEWER)

    assert Outcome.decode(with_newer_fields(out.encode(), results=newer_results)) == out


def test_a_first_attempt_report_from_a_newer_delivery_decodes_with_every_known_field_intact() -> (
    None
):
    env = envelope()
    report = FirstAttempt(
        envelope=env,
        msg_seq=7,
        outcomes=[outcome(env.id)],
        routes={"mx:example.test": {"kind": "mx", "host": "", "port": 0, "mx_lookup": True}},
        dropped="",
    )

    def newer_outcomes(outcomes: list[dict[str, Any]]) -> None:
        for o in outcomes:
            o.update(NEWER)
            for r in o["results"]:
                r.update(NEWER)

    data = with_newer_fields(
        report.encode(), envelope=lambda e: e.update(NEWER), outcomes=newer_outcomes
    )
    assert FirstAttempt.is_first(report.encode())
    assert FirstAttempt.decode(data) == report


def test_a_record_without_a_field_it_needs_is_still_refused() -> None:
    record = json.loads(envelope().to_header())
    del record["recipients"]
    record.update(NEWER)
    with pytest.raises(TypeError, match="recipients"):
        Envelope.from_header(json.dumps(record))
