"""The reads that decide whether a stored message still needs its first attempt:
the queue's state, a report waiting for the queue, the end on its own history."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import nats
import pytest
from nats.js import JetStreamContext

from elemta.common.config import load_config
from elemta.common.envelope import new_queue_id
from elemta.common.evidence import own_end, queue_state, report_waiting
from elemta.common.jetstream import STATE_BUCKET, ensure_streams

from support.natsserver import NatsServer


@pytest.fixture
async def js(nats_server: NatsServer) -> AsyncIterator[JetStreamContext]:
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream(timeout=5)
    await ensure_streams(js, load_config(env={"ELEMTA_NATS_URL": nats_server.url}))
    yield js
    await nc.close()


async def test_the_queue_state_is_there_while_written_and_gone_once_removed(
    js: JetStreamContext,
) -> None:
    qid = new_queue_id()
    kv = await js.key_value(STATE_BUCKET)
    assert await queue_state(js, qid) is None
    await kv.put(qid, json.dumps({"id": qid, "msg_seq": 7}).encode())
    assert await queue_state(js, qid) == {"id": qid, "msg_seq": 7}
    await kv.put(qid, b"not json")
    assert await queue_state(js, qid) == {}  # held all the same
    await kv.delete(qid)
    assert await queue_state(js, qid) is None


async def test_a_report_waits_until_the_queue_takes_it(js: JetStreamContext) -> None:
    qid = new_queue_id()
    assert not await report_waiting(js, qid)
    await js.publish(f"elemta.outcome.{qid}", b"{}")
    assert await report_waiting(js, qid)


@pytest.mark.parametrize(
    ("records", "end"),
    [
        ([], ""),
        ([{"type": "accepted"}], ""),
        ([{"type": "accepted"}, [{"type": "delivered"}, {"type": "done"}]], "done"),
        ([{"type": "withdrawn"}], "withdrawn"),
        ([{"type": "done"}, {"type": "hold"}], ""),  # only the last record counts
        (["not an event"], ""),
    ],
)
async def test_the_last_record_on_its_own_subject_says_how_a_message_ended(
    js: JetStreamContext, records: list[object], end: str
) -> None:
    qid = new_queue_id()
    for record in records:
        await js.publish(f"elemta.events.{qid}", json.dumps(record).encode())
    assert await own_end(js, qid) == end
