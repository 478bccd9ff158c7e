"""History records of messages delivery ends at once, stored several to a record."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import nats
import pytest

from elemta.common.config import Config
from elemta.common.envelope import new_queue_id
from elemta.common.history import batched_events
from elemta.common.jetstream import EVENTS_STREAM, ensure_streams
from elemta.delivery.finish import HistoryBatch, RecordLate

from support.natsserver import NatsServer


def journey(qid: str, recipients: int = 1) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = [{"type": "accepted", "id": qid}]
    events += [
        {"type": "delivered", "id": qid, "recipient": f"r{n}@x.test"} for n in range(recipients)
    ]
    return events + [{"type": "done", "id": qid}]


async def test_messages_of_one_second_share_a_record_and_each_finds_its_own(
    nats_server: NatsServer,
) -> None:
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    await ensure_streams(js, Config.model_validate({"nats": {"url": nats_server.url}}))
    qids = [new_queue_id() for _ in range(10)]
    batch = HistoryBatch(nc, 2.0)
    seqs = await asyncio.gather(*(batch.store(q, journey(q)) for q in qids))
    # the first goes at once, the nine after it share a record of their bucket
    # (or two: a second may just turn)
    assert len(set(seqs)) <= 3
    for qid in qids:
        assert await batched_events(js, qid) == journey(qid)
    await nc.close()


async def test_a_message_ending_after_a_quiet_spell_is_recorded_at_once_and_those_right_after_it_wait_to_go_together(
    nats_server: NatsServer,
) -> None:
    """What ends alone must not wait for company: the longer a delivered message
    waits for its record, the likelier a crash makes it delivered twice."""
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    await ensure_streams(js, Config.model_validate({"nats": {"url": nats_server.url}}))
    batch = HistoryBatch(nc, 2.0, delay=30.0)
    alone = new_queue_id()
    first = await asyncio.wait_for(batch.store(alone, journey(alone)), 5)

    batch = HistoryBatch(nc, 2.0, delay=0.2)
    lead = new_queue_id()
    await asyncio.wait_for(batch.store(lead, journey(lead)), 5)
    qids = [new_queue_id() for _ in range(5)]
    stores = [asyncio.create_task(batch.store(q, journey(q))) for q in qids]
    done, _ = await asyncio.wait(stores, timeout=0.1)
    assert not done  # within the delay after a round: they wait for the next one
    seqs = await asyncio.wait_for(asyncio.gather(*stores), 5)
    assert len(set(seqs)) <= 2 and first not in seqs  # together (two buckets at most)
    for qid in [alone, lead, *qids]:
        assert await batched_events(js, qid) == journey(qid)
    await nc.close()


async def test_a_record_too_large_for_the_server_fails_alone(nats_server: NatsServer) -> None:
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    await ensure_streams(js, Config.model_validate({"nats": {"url": nats_server.url}}))
    batch = HistoryBatch(nc, 2.0)
    small, huge, after = new_queue_id(), new_queue_id(), new_queue_id()
    results = await asyncio.gather(
        batch.store(small, journey(small)),
        batch.store(huge, journey(huge, recipients=nc.max_payload // 40)),  # above max_payload
        batch.store(after, journey(after)),
        return_exceptions=True,
    )
    assert isinstance(results[1], Exception)
    assert await batched_events(js, small) == journey(small)
    assert await batched_events(js, after) == journey(after)
    assert await batched_events(js, huge) is None
    assert (await js.stream_info(EVENTS_STREAM)).state.messages == 2
    await nc.close()


async def test_a_record_without_a_pubAck_is_sent_again_until_the_stream_answers(
    nats_server: NatsServer, caplog: pytest.LogCaptureFixture
) -> None:
    """ "No responders" for a moment (a node's streams still coming up after a
    restart) must not leave delivered mail without its end recorded: it would be
    delivered a second time when offered again."""
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    qid = new_queue_id()
    batch = HistoryBatch(nc, 2.0, late_after=30.0)
    caplog.set_level(logging.INFO, logger="elemta.delivery.finish")
    stored = asyncio.create_task(batch.store(qid, journey(qid)))
    for _ in range(200):  # the stream is not there: the first try is refused
        if any("sending it again" in r.getMessage() for r in caplog.records):
            break
        await asyncio.sleep(0.025)
    assert not stored.done()
    await ensure_streams(js, Config.model_validate({"nats": {"url": nats_server.url}}))

    assert await asyncio.wait_for(stored, 10) > 0
    assert await batched_events(js, qid) == journey(qid)
    await nc.close()


async def test_a_record_is_given_up_after_its_patience(nats_server: NatsServer) -> None:
    nc = await nats.connect(nats_server.url)
    batch = HistoryBatch(nc, 1.0, patience=0.5)
    qid = new_queue_id()
    try:
        await batch.store(qid, journey(qid))
    except Exception as exc:
        assert "NoStreamResponse" in type(exc).__name__
    else:
        raise AssertionError("stored without a stream")
    await nc.close()


async def test_messages_stop_waiting_for_a_late_record_which_is_still_sent(
    nats_server: NatsServer,
) -> None:
    """A stream electing a new leader takes seconds, and a delivery process killed
    while its messages wait for their record delivers them all again: they go to
    the queue (through another stream) instead, and the record still lands."""
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    batch = HistoryBatch(nc, 1.0, late_after=0.3)  # patience: 10 s
    qid = new_queue_id()
    started = time.monotonic()
    with pytest.raises(RecordLate):
        await batch.store(qid, journey(qid))  # no stream yet: no PubAck
    assert time.monotonic() - started < batch.patience / 2  # released, not given up

    await ensure_streams(js, Config.model_validate({"nats": {"url": nats_server.url}}))
    deadline = time.monotonic() + 10
    while await batched_events(js, qid) != journey(qid):
        assert time.monotonic() < deadline, "the late record was not stored"
        await asyncio.sleep(0.05)
    await nc.close()


async def test_after_a_late_record_the_next_messages_go_to_the_queue_at_once_until_one_is_stored(
    nats_server: NatsServer,
) -> None:
    """A stream away for its leader election stays away for seconds: the messages
    ending meanwhile do not each wait for their record to be late."""
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    batch = HistoryBatch(nc, 1.0, late_after=0.3)
    first, second, third = new_queue_id(), new_queue_id(), new_queue_id()
    with pytest.raises(RecordLate):
        await batch.store(first, journey(first))  # no stream yet: late after 0.3 s
    assert batch.late
    batch.late_after = 60.0  # a record's own lateness would now take a minute
    with pytest.raises(RecordLate):
        await asyncio.wait_for(batch.store(second, journey(second)), 5)

    await ensure_streams(js, Config.model_validate({"nats": {"url": nats_server.url}}))
    deadline = time.monotonic() + 10
    while batch.late:  # the records still being sent land
        assert time.monotonic() < deadline, "no record was stored"
        await asyncio.sleep(0.05)
    assert await asyncio.wait_for(batch.store(third, journey(third)), 5) > 0
    for qid in (first, second, third):  # the late ones too, each when its retry comes
        while await batched_events(js, qid) != journey(qid):
            assert time.monotonic() < deadline + 10, f"the record of {qid} was not stored"
            await asyncio.sleep(0.05)
    await nc.close()
