"""The lease: one queue process of several is active, a standby takes over."""

from __future__ import annotations

import time

import nats
from queue_harness import QueueHarness, eventually

from elemta.queue.lease import Lease

from support.natsserver import NatsServer


async def test_one_holder_at_a_time_and_an_expired_lease_goes_to_the_other(
    nats_server: NatsServer,
) -> None:
    nc = await nats.connect(nats_server.url)
    try:
        js = nc.jetstream(timeout=5)
        now = [100.0]
        first = Lease(js, lease_time=1.0, holder="first", clock=lambda: now[0])
        second = Lease(js, lease_time=1.0, holder="second")
        await first.open()
        await second.open()

        assert await first.acquire()
        assert first.held
        assert not await second.acquire()
        assert await second.current() == "first"
        assert await first.renew()

        # without a renewal for 0.4 × lease_time the holder stops trusting it,
        # before the key's TTL (0.6 × lease_time) can pass on the server
        now[0] += 0.39
        assert first.held
        now[0] += 0.02
        assert not first.held

        # not renewed: JetStream drops the key and the other takes it
        started = time.monotonic()
        assert await eventually(second.acquire, within=5.0, interval=0.05)
        assert time.monotonic() - started < 1.0
        assert await second.current() == "second"
        # the old holder's compare-and-set renewal fails: it must stand down
        assert not await first.renew()
        assert not first.held

        # a graceful stop hands it over at once
        await second.release()
        assert await first.acquire()
        assert await first.current() == "first"
    finally:
        await nc.close()


async def test_the_standby_queue_takes_over_with_the_retry_schedule_rebuilt(
    harness: QueueHarness,
) -> None:
    # the retry falls due after the takeover, however slow the machine: the
    # rebuilt heap is seen holding it before the new scheduler moves it
    first = await harness.start_queue(retry_schedule=[4.0], lease_time=1.0)
    second = await harness.start_queue(retry_schedule=[4.0], lease_time=1.0)
    assert first.active and not second.active
    assert second.scheduler is None and second.intake is None  # standing by: no work

    env, _ = await harness.store(["b@a.test"])
    [(job, _)] = await harness.take_jobs(1)
    await harness.report(job, "deferred", 421, "4.4.1 no answer")
    assert await eventually(lambda: _deferred(harness, 1))
    assert first.scheduler is not None and len(first.scheduler) == 1

    await harness.stop_queue(first)  # a graceful stop releases the lease
    stopped = time.monotonic()
    assert await eventually(lambda: _true(second.active), within=5.0)
    assert time.monotonic() - stopped < 1.0  # within lease_time, not only after the TTL
    assert second.scheduler is not None and len(second.scheduler) == 1  # from the stream

    # the parked job comes back once, from the new active process
    [(retry, _)] = await harness.take_jobs(1, within=10)
    assert (retry.id, retry.attempt) == (env.id, 2)
    # and new mail is taken in by it
    later, _ = await harness.store(["c@a.test"])
    [(job, _)] = await harness.take_jobs(1)
    assert job.id == later.id
    assert await harness.no_more_jobs()


async def _deferred(harness: QueueHarness, n: int) -> bool:
    return await harness.deferred_count() == n


async def _true(value: bool) -> bool:
    return value
