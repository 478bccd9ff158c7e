"""The retry scheduler: restarts, expiry of parked jobs, flush, and delete."""

from __future__ import annotations

import email
import email.policy
import json
import time

import pytest
from nats.js.errors import NotFoundError
from queue_harness import QueueHarness, eventually

from elemta.common.jetstream import DEFERRED_STREAM, MESSAGES_STREAM
from elemta.queue.dispatch import delete_stream_msg


async def _deferred_is(harness: QueueHarness, n: int) -> bool:
    return await harness.deferred_count() == n


async def test_scheduler_rebuilds_its_heap_after_a_restart(harness: QueueHarness) -> None:
    # due after the restart, however slow the machine: the rebuilt heap is seen
    # holding the job before the new scheduler moves it
    first = await harness.start_queue(retry_schedule=[3.0])
    env, seq = await harness.store(["b@a.test"])
    [(job, _)] = await harness.take_jobs(1)
    await harness.report(job, "deferred", 421, "4.4.1 no answer")
    assert await eventually(lambda: _deferred_is(harness, 1))
    deferred_at = time.monotonic()
    await harness.stop_queue(first)

    second = await harness.start_queue(retry_schedule=[3.0])
    assert second.scheduler is not None and len(second.scheduler) == 1
    [(retry, headers)] = await harness.take_jobs(1, within=8)
    assert time.monotonic() - deferred_at >= 2.8  # not before it was due
    assert retry.attempt == 2
    assert retry.msg_seq == (await harness.kept(env.id))[0]
    assert retry.recipients == ["b@a.test"]
    assert headers["traceparent"].split("-")[1] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert await eventually(lambda: _deferred_is(harness, 0))
    assert len(second.scheduler) == 0
    st = await harness.state(env.id)
    assert st is not None and st["dests"]["mx:a.test"]["status"] == "queued"


async def test_parked_job_of_a_message_past_its_lifetime_bounces_instead(
    harness: QueueHarness,
) -> None:
    first = await harness.start_queue(retry_schedule=[0.5])
    env, seq = await harness.store(["slow@a.test"])
    [(job, _)] = await harness.take_jobs(1)
    await harness.report(job, "deferred", 452, "4.2.2 mailbox full", "4.2.2")
    assert await eventually(lambda: _deferred_is(harness, 1))
    await harness.stop_queue(first)

    # Restarted with a lifetime the message has already outlived.
    await harness.start_queue(retry_schedule=[0.5], lifetime=0.05)
    await eventually(lambda: _gone(harness, env.id))
    [(_, benv, data)] = [s for s in await harness.stored() if s[0] != seq]
    assert benv.recipients == ["alice@sender.test"]
    dsn = email.message_from_bytes(data, policy=email.policy.default)
    assert b"Status: 4.4.7" in data
    assert b"452 4.2.2 mailbox full" in data
    assert dsn.get_param("report-type") == "delivery-status"
    assert await harness.deferred_count() == 0
    # Only the bounce's own job; the expired one never reached delivery again.
    [(bjob, _)] = await harness.take_jobs(1)
    assert bjob.sender == ""
    assert await harness.no_more_jobs(0.3)


async def test_flush_makes_parked_jobs_due_now(harness: QueueHarness) -> None:
    await harness.start_queue(retry_schedule=[60.0])
    await harness.store(["b@a.test"])
    [(job, _)] = await harness.take_jobs(1)
    await harness.report(job, "deferred", 421, "4.4.1 no answer")
    assert await eventually(lambda: _deferred_is(harness, 1))
    assert harness.nc is not None
    reply = await harness.nc.request("elemta.queue.flush", json.dumps({"id": job.id}).encode())
    assert json.loads(reply.data) == {"ok": True, "flushed": 1}
    [(retry, _)] = await harness.take_jobs(1, within=3)
    assert retry.attempt == 2


async def test_deleted_message_leaves_nothing_and_its_parked_job_is_dropped(
    harness: QueueHarness,
) -> None:
    svc = await harness.start_queue(retry_schedule=[0.5])
    env, _ = await harness.store(["b@a.test"])
    [(job, _)] = await harness.take_jobs(1)
    await harness.report(job, "deferred", 421, "4.4.1 no answer")
    assert await eventually(lambda: _deferred_is(harness, 1))
    assert harness.nc is not None
    reply = await harness.nc.request("elemta.queue.delete", json.dumps({"id": env.id}).encode())
    assert json.loads(reply.data) == {"ok": True}
    assert await harness.state(env.id) is None
    assert await harness.stored() == []
    assert "deleted" in await harness.event_types(env.id)
    assert await eventually(lambda: _deferred_is(harness, 0), within=3)
    assert await harness.no_more_jobs(0.3)
    assert svc.scheduler is not None and len(svc.scheduler) == 0
    info = await harness.js.stream_info(DEFERRED_STREAM)
    assert info.state.messages == 0


async def _gone(harness: QueueHarness, qid: str) -> bool:
    return await harness.state(qid) is None and "done" in await harness.event_types(qid)


async def test_deleting_a_message_that_is_already_gone_is_harmless(
    harness: QueueHarness,
) -> None:
    await harness.start_queue()
    _, seq = await harness.store([], hold=True)
    assert harness.nc is not None
    await delete_stream_msg(harness.nc, MESSAGES_STREAM, seq)
    await delete_stream_msg(harness.nc, MESSAGES_STREAM, seq)
    await delete_stream_msg(harness.nc, MESSAGES_STREAM, seq + 1000)
    with pytest.raises(NotFoundError):
        await delete_stream_msg(harness.nc, "NO_SUCH_STREAM", 1)
