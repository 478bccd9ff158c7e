"""The queue's per-message state record, as a queue process of an older version
reads what a newer one wrote (a rolling upgrade, or a rollback): fields it does
not know are left out, and the message goes on."""

from __future__ import annotations

import json
import time
from typing import Any

from queue_harness import QueueHarness, eventually

from elemta.common.envelope import Envelope, new_queue_id
from elemta.common.jetstream import STATE_BUCKET
from elemta.queue.state import DestState, MessageState

NEWER = {"from_a_newer_version": {"x": [1, 2]}, "another_new_field": "y"}


def newer(record: dict[str, Any]) -> dict[str, Any]:
    """``record`` as a newer queue writes it: with fields this one does not know, at
    the top and in every destination."""
    return {
        **record,
        **NEWER,
        "dests": {k: {**d, **NEWER} for k, d in record.get("dests", {}).items()},
    }


def test_a_state_record_from_a_newer_queue_loads_with_every_known_field_intact() -> None:
    env = Envelope(
        new_queue_id(), "alice@sender.test", ["b@a.test", "c@b.test"], time.time(), size=99
    )
    st = MessageState.from_envelope(env, 12, {"traceparent": "00-1-2-01"})
    st.dests["mx:a.test"] = DestState(
        {"kind": "mx", "host": "", "port": 0, "mx_lookup": True},
        "a.test",
        ["b@a.test"],
        attempt=2,
        status="deferred",
        next_attempt=time.time() + 300,
        last={"code": 451, "text": "try later"},
    )
    st.final["c@b.test"] = "delivered"
    data = json.dumps(newer(json.loads(st.encode()))).encode()
    assert MessageState.decode(data) == st


async def test_a_message_whose_state_a_newer_queue_wrote_is_finished_by_an_older_one(
    harness: QueueHarness,
) -> None:
    first = await harness.start_queue()
    env, _ = await harness.store(["b@a.test"])
    [(job, _)] = await harness.take_jobs(1)
    await harness.stop_queue(first)

    # the record as a newer queue process would have written it
    kv = await harness.js.key_value(STATE_BUCKET)
    entry = await kv.get(env.id)
    assert entry.value is not None
    await kv.put(env.id, json.dumps(newer(json.loads(entry.value))).encode())

    await harness.start_queue()
    await harness.report(job, "delivered")
    await eventually(lambda: _is_gone(harness, env.id))
    assert (await harness.event_types(env.id)).count("delivered") == 1


async def _is_gone(harness: QueueHarness, qid: str) -> bool:
    return await harness.state(qid) is None and "done" in await harness.event_types(qid)
