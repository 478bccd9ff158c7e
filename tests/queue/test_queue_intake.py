"""Intake: stored messages become state and one delivery job per destination."""

from __future__ import annotations

import json

import nats
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from queue_harness import TRACE_ID, QueueHarness, eventually, make_config

from elemta.common.health import HealthServer
from elemta.common.jetstream import DELIVERY_STREAM, MESSAGES_STREAM
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
    for job, headers in jobs:
        assert job.id == env.id
        assert job.msg_seq == seq
        assert job.attempt == 1
        assert job.sender == "alice@sender.test"
        assert headers["Nats-Msg-Id"].startswith(f"{env.id}.")
        assert headers["Nats-Msg-Id"].endswith(".1")
    assert await harness.no_more_jobs()

    st = await harness.state(env.id)
    assert st is not None
    assert st["status"] == "active"
    assert st["msg_seq"] == seq
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
    svc = await harness.start_queue()
    env, seq = await harness.store(["b1@a.test", "c@b.test"])
    await eventually(lambda: harness.state(env.id))

    # Hand the same stored message to the intake again, twice, as a redelivery
    # after a lost ack would: once fresh, once after a nak.
    sub = await harness.js.pull_subscribe(
        "elemta.msg.>",
        stream=MESSAGES_STREAM,
        config=ConsumerConfig(
            ack_policy=AckPolicy.EXPLICIT, deliver_policy=DeliverPolicy.ALL, ack_wait=1.0
        ),
    )
    [first] = await sub.fetch(1, timeout=2)

    async def lost() -> None:
        pass

    first.ack = lost  # type: ignore[method-assign]
    assert svc.intake is not None
    await svc.intake.handle(first)
    [again] = await sub.fetch(1, timeout=3)
    assert again.metadata.num_delivered == 2
    await svc.intake.handle(again)
    await sub.unsubscribe()

    assert await harness.count(DELIVERY_STREAM) == 2
    jobs = await harness.take_jobs(2)
    assert all(j.msg_seq == seq for j, _ in jobs)
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
