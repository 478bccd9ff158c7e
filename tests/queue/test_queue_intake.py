"""Intake: stored messages become state and one delivery job per destination."""

from __future__ import annotations

import json
import time

import nats
from nats.js.api import AckPolicy, ConsumerConfig
from queue_harness import TRACE_ID, QueueHarness, eventually, make_config

from elemta.common.envelope import Envelope, FirstAttempt, Outcome, RecipientResult, new_queue_id
from elemta.common.health import HealthServer
from elemta.common.jetstream import (
    DEFERRED_STREAM,
    DELIVERY_STREAM,
    ENVELOPE_HEADER,
    FIRST_CONSUMER,
    INTAKE_CONSUMER,
    MESSAGES_STREAM,
    OUTCOMES_STREAM,
)
from elemta.common.replies import Status
from elemta.queue.service import QueueService


async def test_recipients_of_one_domain_become_one_job(harness: QueueHarness) -> None:
    await harness.start_queue()
    env, seq = await harness.store(
        ["b1@a.test", "b2@a.test", "c@b.test", "d@local.test", "e@relayed.test"]
    )
    jobs = await harness.take_jobs(4)
    by_dest = {job.dest: job for job, _ in jobs}
    assert set(by_dest) == {"mx:a.test", "mx:b.test", "local", "smtp:relay.test:2525:0"}
    assert by_dest["mx:a.test"].recipients == ["b1@a.test", "b2@a.test"]
    assert by_dest["mx:a.test"].domain == "a.test"
    assert by_dest["smtp:relay.test:2525:0"].route["host"] == "relay.test"
    assert by_dest["smtp:relay.test:2525:0"].domain == "relayed.test"
    kept_seq, kept_body = await harness.kept(env.id)  # the queue works from its own copy
    assert kept_seq != seq and b"Subject: Hello" in kept_body
    assert await harness.count(MESSAGES_STREAM) == 1, "the first-attempt copy is left"
    for job, headers in jobs:
        assert job.id == env.id
        assert job.msg_seq == kept_seq
        assert job.attempt == 1
        assert job.sender == "alice@sender.test"
        assert headers["Nats-Msg-Id"].startswith(f"{env.id}.")
        assert headers["Nats-Msg-Id"].endswith(".1")
    assert await harness.no_more_jobs()

    st = await harness.state(env.id)
    assert st is not None
    assert st["status"] == "active"
    assert st["msg_seq"] == kept_seq
    assert st["dests"]["mx:a.test"]["recipients"] == ["b1@a.test", "b2@a.test"]
    assert st["dests"]["mx:a.test"]["status"] == "queued"
    assert st["trace"]["traceparent"].split("-")[1] == TRACE_ID
    events = await eventually(lambda: harness.events(env.id))
    assert events[0]["type"] == "accepted"
    assert events[0]["sender"] == "alice@sender.test"


async def test_jobs_carry_the_trace_of_the_stored_message(harness: QueueHarness) -> None:
    await harness.start_queue()
    await harness.store(["bob@a.test"])
    [(_, headers)] = await harness.take_jobs(1)
    assert headers["traceparent"].split("-")[1] == TRACE_ID


async def test_large_body_in_the_object_store_is_named_in_the_job(
    harness: QueueHarness,
) -> None:
    await harness.start_queue()
    env, _ = await harness.store(["bob@a.test"], body_object=True)
    [(job, _)] = await harness.take_jobs(1)
    assert job.body_object == env.id


async def test_held_message_gets_state_but_no_job_until_released(
    harness: QueueHarness,
) -> None:
    await harness.start_queue()
    env, _ = await harness.store(["bob@a.test", "carol@b.test"], hold=True)
    st = await eventually(lambda: harness.state(env.id))
    assert st["status"] == "hold"
    assert st["dests"] == {}
    assert await harness.no_more_jobs()
    assert "hold" in await harness.event_types(env.id)

    assert harness.nc is not None
    reply = await harness.nc.request("elemta.queue.release", json.dumps({"id": env.id}).encode())
    assert json.loads(reply.data) == {"ok": True, "jobs": 2}
    jobs = await harness.take_jobs(2)
    assert sorted(j.dest for j, _ in jobs) == ["mx:a.test", "mx:b.test"]
    st = await harness.state(env.id)
    assert st is not None and st["status"] == "active"
    again = await harness.nc.request("elemta.queue.release", json.dumps({"id": env.id}).encode())
    assert json.loads(again.data)["ok"] is False


async def test_redelivered_intake_does_not_duplicate_jobs(harness: QueueHarness) -> None:
    await harness.start_queue()
    env, seq = await harness.store(["b1@a.test", "c@b.test"])
    await eventually(lambda: harness.state(env.id))

    # The same report again, twice, as a redelivery after a lost ack would bring it
    # (another Nats-Msg-Id, so that JetStream stores it again).
    for n in (2, 3):
        await harness.js.publish(
            f"elemta.outcome.{env.id}",
            FirstAttempt(envelope=env, msg_seq=seq).encode(),
            headers={"Nats-Msg-Id": f"again.{n}"},
        )
    await eventually(lambda: _count_is(harness, OUTCOMES_STREAM, 0))

    assert await harness.count(DELIVERY_STREAM) == 2
    jobs = await harness.take_jobs(2)
    kept_seq, _ = await harness.kept(env.id)
    assert all(j.msg_seq == kept_seq for j, _ in jobs)  # one copy kept, not three
    assert await harness.no_more_jobs()
    assert (await harness.event_types(env.id)).count("accepted") == 1


async def test_message_without_recipients_is_removed_at_once(harness: QueueHarness) -> None:
    await harness.start_queue()
    env, _ = await harness.store([])
    await eventually(lambda: harness.events(env.id))
    assert await eventually(lambda: _count_is(harness, MESSAGES_STREAM, 0))
    assert await harness.state(env.id) is None


async def _count_is(harness: QueueHarness, stream: str, n: int) -> bool:
    return await harness.count(stream) == n


async def test_readiness_reports_nats_and_streams(harness: QueueHarness) -> None:
    health = HealthServer("127.0.0.1:0")
    svc = QueueService(make_config(harness.server.url), health)
    assert set(health.failing()) == {"nats", "streams"}
    await svc.start()
    try:
        assert health.failing() == []
    finally:
        await svc.stop()
    assert "streams" in health.failing()


async def test_streams_and_the_delivery_consumer_exist_once_started(harness: QueueHarness) -> None:
    await harness.start_queue()
    nc = await nats.connect(harness.server.url)
    try:
        js = nc.jetstream()
        names = {s.config.name for s in await js.streams_info()}
        assert {"ELEMTA_MESSAGES", "ELEMTA_DELIVERY", "ELEMTA_DEFERRED"} <= names
        info = await js.consumer_info(DELIVERY_STREAM, "delivery")
        assert info.config.ack_policy == AckPolicy.EXPLICIT
    finally:
        await nc.close()


# -- first attempts made by delivery ---------------------------------------------


async def _stored(harness: QueueHarness, recipients: list[str]) -> tuple[Envelope, int]:
    """A stored message whose first attempt the test reports itself."""
    env = Envelope(new_queue_id(), "alice@sender.test", recipients, time.time(), size=5)
    harness.manual.add(env.id)
    ack = await harness.js.publish(
        f"elemta.msg.{env.id}", b"hello", headers={ENVELOPE_HEADER: env.to_header()}
    )
    return env, ack.seq


def _outcome(env: Envelope, dest: str, results: dict[str, str]) -> Outcome:
    return Outcome(
        id=env.id,
        dest=dest,
        domain=dest.partition(":")[2],
        attempt=1,
        host="mx.test",
        results=[
            RecipientResult(r, Status(st), 250 if st == "delivered" else 451)
            for r, st in results.items()
        ],
    )


async def test_a_first_attempt_delivered_to_everyone_leaves_nothing_but_one_history_record(
    harness: QueueHarness,
) -> None:
    await harness.start_queue()
    env, seq = await _stored(harness, ["b@a.test", "c@b.test"])
    outcomes = [
        _outcome(env, "mx:a.test", {"b@a.test": "delivered"}),
        _outcome(env, "mx:b.test", {"c@b.test": "delivered"}),
    ]
    routes = {o.dest: {"kind": "mx", "host": o.domain} for o in outcomes}
    await harness.hand_over(env, seq, outcomes, routes=routes)
    assert await eventually(lambda: _count_is(harness, MESSAGES_STREAM, 0))
    assert await harness.state(env.id) is None
    types = await eventually(lambda: harness.event_types(env.id))
    assert types == ["accepted", "attempt", "delivered", "attempt", "delivered", "done"]
    info = await harness.js.stream_info("ELEMTA_EVENTS")
    assert info.state.messages == 1  # one stored record for the whole journey
    assert await harness.count(DELIVERY_STREAM) == 0


async def test_a_first_attempt_deferred_for_one_recipient_becomes_state_and_a_retry(
    harness: QueueHarness,
) -> None:
    await harness.start_queue(retry_schedule=[300.0], lifetime=3600.0)
    env, seq = await _stored(harness, ["b@a.test", "c@b.test"])
    outcomes = [
        _outcome(env, "mx:a.test", {"b@a.test": "delivered"}),
        _outcome(env, "mx:b.test", {"c@b.test": "deferred"}),
    ]
    routes = {o.dest: {"kind": "mx", "host": o.domain} for o in outcomes}
    await harness.hand_over(env, seq, outcomes, routes=routes)

    async def retried() -> dict | None:
        st = await harness.state(env.id)
        return st if st and st["dests"]["mx:b.test"]["status"] == "deferred" else None

    st = await eventually(retried)
    assert st["final"] == {"b@a.test": "delivered"}
    assert st["dests"]["mx:b.test"]["attempt"] == 2
    assert st["dests"]["mx:b.test"]["route"]["host"] == "b.test"
    assert await harness.count(DEFERRED_STREAM) == 1
    assert await harness.count(MESSAGES_STREAM) == 1


async def test_a_copy_dropped_after_its_deadline_is_deleted_and_recorded(
    harness: QueueHarness,
) -> None:
    await harness.start_queue()
    env, seq = await _stored(harness, ["b@a.test"])
    await harness.hand_over(env, seq, dropped="stored 1.2s after its deadline")
    assert await eventually(lambda: _count_is(harness, MESSAGES_STREAM, 0))
    assert await eventually(lambda: harness.event_types(env.id)) == ["withdrawn"]
    assert await harness.state(env.id) is None


async def test_a_store_of_the_queue_intake_era_carries_over_to_first_attempts(
    harness: QueueHarness,
) -> None:
    svc = await harness.start_queue()
    await harness.stop_queue(svc)
    js = harness.js
    await js.delete_consumer(MESSAGES_STREAM, FIRST_CONSUMER)
    done, _ = await _stored(harness, ["b@a.test"])
    await js.add_consumer(
        MESSAGES_STREAM,
        ConsumerConfig(
            durable_name=INTAKE_CONSUMER,
            ack_policy=AckPolicy.EXPLICIT,
            filter_subject="elemta.msg.>",
        ),
    )
    sub = await js.pull_subscribe_bind(INTAKE_CONSUMER, stream=MESSAGES_STREAM)
    [taken] = await sub.fetch(1, timeout=2)
    await taken.ack_sync()  # the old queue took this one in
    _, waiting = await _stored(harness, ["c@b.test"])

    await harness.start_queue()
    info = await js.consumer_info(MESSAGES_STREAM, FIRST_CONSUMER)
    assert info.config.opt_start_seq == waiting
    assert info.num_pending + info.num_ack_pending == 1
    names = [c.name for c in await js.consumers_info(MESSAGES_STREAM)]
    assert INTAKE_CONSUMER not in names
