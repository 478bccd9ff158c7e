"""First attempts straight from ELEMTA_MESSAGES: a message delivered to everyone is
ended by delivery (one history record, then the ack; the queue removes the copy
later, in bulk); anything else is one report per stored message for the queue."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from delivery_harness import BODY, Harness, metric
from nats.js.errors import NotFoundError

from elemta.common.config import Config
from elemta.common.envelope import Envelope, FirstAttempt, new_queue_id
from elemta.common.history import batch_subject, events_in_batch
from elemta.common.jetstream import (
    ENVELOPE_HEADER,
    EVENTS_STREAM,
    FIRST_CONSUMER,
    MESSAGES_STREAM,
    OUTCOMES_STREAM,
    first_consumer_config,
)
from elemta.delivery.finish import HistoryBatch

from support.natsserver import NatsServer
from support.smtpsink import SmtpSink


def routed(harness: Harness, sink: SmtpSink, kind: str = "smtp") -> Config:
    cfg = harness.config()
    relay = f"smtp:[127.0.0.1]:{sink.port}" if kind == "smtp" else f"lmtp:127.0.0.1:{sink.port}"
    routes = {"relay.test": relay, "other.test": "smtp:[127.0.0.1]:1"}
    return cfg.model_copy(update={"transport": cfg.transport.model_copy(update={"routes": routes})})


async def store(harness: Harness, recipients: list[str], **envelope: Any) -> Envelope:
    env = Envelope(new_queue_id(), "alice@sender.test", recipients, time.time(), **envelope)
    await harness.js.publish(
        f"elemta.msg.{env.id}", BODY, headers={ENVELOPE_HEADER: env.to_header()}
    )
    return env


async def report(harness: Harness, qid: str) -> FirstAttempt:
    raw = await harness.outcome_msg(qid)
    assert raw.data is not None and FirstAttempt.is_first(raw.data)
    return FirstAttempt.decode(raw.data)


async def batched(harness: Harness, qid: str) -> list[list[dict[str, Any]]]:
    """Every list of ``qid``'s events in the batch records of its bucket."""
    found, seq = [], 1
    while True:
        try:
            raw = await harness.js.get_msg(
                EVENTS_STREAM, seq=seq, subject=batch_subject(qid), next=True
            )
        except NotFoundError:
            return found
        events = events_in_batch(raw.data, qid)
        if events is not None:
            found.append(events)
        seq = (raw.seq or seq) + 1


async def history(harness: Harness, qid: str, within: float = 10.0) -> list[dict[str, Any]]:
    """The events delivery stored for ``qid`` (with other messages' events)."""
    deadline = time.monotonic() + within
    while True:
        found = await batched(harness, qid)
        if found:
            return found[0]
        assert time.monotonic() < deadline, f"no history for {qid} within {within}s"
        await asyncio.sleep(0.05)


async def test_a_message_delivered_to_everyone_is_ended_by_delivery_with_one_history_record(
    harness: Harness, sink: SmtpSink
) -> None:
    cfg = routed(harness, sink)
    await harness.js.add_consumer(MESSAGES_STREAM, first_consumer_config(cfg))
    await harness.start(cfg)
    env = await store(harness, ["bob@relay.test", "carol@relay.test"], size=len(BODY))
    events = await history(harness, env.id)
    assert [e["type"] for e in events] == [
        "accepted",
        "attempt",
        "delivered",
        "attempt",
        "delivered",
        "done",
    ]
    assert events[0]["recipients"] == ["bob@relay.test", "carol@relay.test"]
    assert events[0]["size"] == len(BODY)
    assert events[1]["code"] == 250 and events[1]["attempt"] == 1
    assert events[-1]["delivered"] == 2
    assert sorted(sink.wait_for(1)[0].rcpt_tos) == ["bob@relay.test", "carol@relay.test"]

    deadline = time.monotonic() + 10.0
    while True:  # the ack follows the history record
        info = await harness.js.consumer_info(MESSAGES_STREAM, FIRST_CONSUMER)
        if info.num_ack_pending == 0 and info.num_pending == 0:
            break
        assert time.monotonic() < deadline, "the message was never acknowledged"
        await asyncio.sleep(0.05)
    # no delete of its own: the copy stays for the queue's bulk removal
    assert (await harness.js.stream_info(MESSAGES_STREAM)).state.messages == 1
    assert (await harness.js.stream_info(OUTCOMES_STREAM)).state.messages == 0
    assert (await harness.js.stream_info(EVENTS_STREAM)).state.messages == 1
    assert await harness.jobs_left() == 0


async def test_a_stored_message_whose_envelope_has_fields_from_a_newer_version_is_delivered(
    harness: Harness, sink: SmtpSink
) -> None:
    """A newer ingress stores envelopes this delivery does not fully know (during a
    rolling upgrade): the fields it knows are enough, the message is delivered."""
    cfg = routed(harness, sink)
    await harness.js.add_consumer(MESSAGES_STREAM, first_consumer_config(cfg))
    await harness.start(cfg)
    env = Envelope(
        new_queue_id(), "alice@sender.test", ["bob@relay.test"], time.time(), size=len(BODY)
    )
    header = json.dumps({**vars(env), "from_a_newer_version": {"x": [1, 2]}, "sealed": True})
    await harness.js.publish(f"elemta.msg.{env.id}", BODY, headers={ENVELOPE_HEADER: header})

    events = await history(harness, env.id)
    assert [e["type"] for e in events] == ["accepted", "attempt", "delivered", "done"]
    assert events[0]["size"] == len(BODY)
    [received] = sink.wait_for(1)
    assert received.mail_from == "alice@sender.test"
    assert received.rcpt_tos == ["bob@relay.test"]
    assert received.content == BODY


async def test_a_sender_who_asked_for_a_success_notice_gets_the_message_reported_to_the_queue(
    harness: Harness, sink: SmtpSink
) -> None:
    cfg = routed(harness, sink)
    await harness.js.add_consumer(MESSAGES_STREAM, first_consumer_config(cfg))
    await harness.start(cfg)
    notify = {"bob@relay.test": "SUCCESS,FAILURE"}
    env = await store(harness, ["bob@relay.test", "carol@relay.test"], dsn_notify=notify)
    got = await report(harness, env.id)
    assert got.envelope == env
    [outcome] = got.outcomes
    assert outcome.attempt == 1 and str(sink.port) in outcome.dest
    assert [r.status for r in outcome.results] == ["delivered", "delivered"]
    assert got.routes[outcome.dest]["host"] == "127.0.0.1"
    assert sorted(sink.wait_for(1)[0].rcpt_tos) == ["bob@relay.test", "carol@relay.test"]
    info = await harness.js.consumer_info(MESSAGES_STREAM, FIRST_CONSUMER)
    assert info.num_ack_pending == 0 and info.num_pending == 0
    assert (await harness.js.stream_info(OUTCOMES_STREAM)).state.messages == 1
    assert await harness.jobs_left() == 0


async def test_every_destination_is_tried_at_once_and_reported_apart(
    harness: Harness, sink: SmtpSink
) -> None:
    cfg = routed(harness, sink)
    await harness.js.add_consumer(MESSAGES_STREAM, first_consumer_config(cfg))
    await harness.start(
        cfg.model_copy(
            update={"delivery": cfg.delivery.model_copy(update={"connect_timeout": 1.0})}
        )
    )
    env = await store(harness, ["bob@relay.test", "dave@other.test"])
    got = await report(harness, env.id)
    by_rcpt = {r.recipient: r.status for o in got.outcomes for r in o.results}
    assert by_rcpt == {"bob@relay.test": "delivered", "dave@other.test": "deferred"}
    assert len(got.outcomes) == 2


async def test_a_held_message_is_handed_over_untried(harness: Harness, sink: SmtpSink) -> None:
    cfg = routed(harness, sink)
    await harness.js.add_consumer(MESSAGES_STREAM, first_consumer_config(cfg))
    await harness.start(cfg)
    env = await store(harness, ["bob@relay.test"], hold=True)
    got = await report(harness, env.id)
    assert got.outcomes == [] and not got.dropped
    await asyncio.sleep(0.3)
    assert sink.messages == []


async def test_a_copy_stored_after_its_deadline_is_never_delivered(
    harness: Harness, sink: SmtpSink
) -> None:
    cfg = routed(harness, sink)
    await harness.js.add_consumer(MESSAGES_STREAM, first_consumer_config(cfg))
    await harness.start(cfg)
    late = await store(harness, ["bob@relay.test"], deadline=time.time() - 1.0)
    in_time = await store(harness, ["carol@relay.test"], deadline=time.time() + 30.0)
    dropped = await report(harness, late.id)
    assert dropped.outcomes == [] and "deadline" in dropped.dropped
    kept = await history(harness, in_time.id)
    assert [e["type"] for e in kept][-2:] == ["delivered", "done"]
    assert [m.rcpt_tos for m in sink.wait_for(1)] == [["carol@relay.test"]]
    await asyncio.sleep(0.3)
    assert len(sink.messages) == 1


async def test_messages_ending_together_each_get_their_history_before_their_ack(
    harness: Harness, sink: SmtpSink
) -> None:
    cfg = routed(harness, sink)
    await harness.js.add_consumer(MESSAGES_STREAM, first_consumer_config(cfg))
    await harness.start(cfg)
    envs = await asyncio.gather(
        *(store(harness, [f"rcpt{i}@relay.test"], size=len(BODY)) for i in range(40))
    )
    for env in envs:  # stored with other messages' events, once per message
        events = await history(harness, env.id)
        assert events[0]["recipients"] == list(env.recipients)
        assert [e["type"] for e in events][-1] == "done"
        assert len(await batched(harness, env.id)) == 1
    deadline = time.monotonic() + 10.0
    while True:  # every message acked once its record is stored
        info = await harness.js.consumer_info(MESSAGES_STREAM, FIRST_CONSUMER)
        if info.num_ack_pending == 0 and info.num_pending == 0:
            break
        assert time.monotonic() < deadline, "messages were left unacknowledged"
        await asyncio.sleep(0.05)
    # fewer records than messages: the point of storing them together
    assert (await harness.js.stream_info(EVENTS_STREAM)).state.messages < 40
    assert len(sink.wait_for(40)) == 40


async def test_a_message_whose_history_is_not_stored_yet_stays_to_be_offered_again(
    harness: Harness, sink: SmtpSink, monkeypatch: Any
) -> None:
    """A process stopped (or killed) between the delivery and the history record:
    the message is neither deleted nor acked, so it is offered again, not lost."""
    never = asyncio.Event()

    async def stuck(self: HistoryBatch, qid: str, events: list[dict[str, Any]]) -> int:
        await never.wait()
        return 0

    monkeypatch.setattr(HistoryBatch, "store", stuck)
    cfg = routed(harness, sink)
    await harness.js.add_consumer(MESSAGES_STREAM, first_consumer_config(cfg))
    service = await harness.start(cfg)
    env = await store(harness, ["bob@relay.test"], size=len(BODY))
    deadline = time.monotonic() + 10.0
    while not sink.messages:  # delivered; its history waits
        assert time.monotonic() < deadline, "never delivered"
        await asyncio.sleep(0.05)
    await service.stop()
    harness.services.remove(service)
    assert (await harness.js.stream_info(MESSAGES_STREAM)).state.messages == 1
    assert (await harness.js.stream_info(EVENTS_STREAM)).state.messages == 0
    info = await harness.js.consumer_info(MESSAGES_STREAM, FIRST_CONSUMER)
    assert info.ack_floor.stream_seq == 0, "acked before its history was stored"

    monkeypatch.undo()
    await harness.start(cfg)  # offered again once the ack wait runs out
    events = await history(harness, env.id, within=15.0)
    assert events[-1]["type"] == "done"


@pytest.mark.parametrize("kind", ["smtp", "lmtp"])
async def test_a_message_is_not_sent_while_nats_is_unreachable_and_goes_once_when_it_is_back(
    harness: Harness, nats_server: NatsServer, request: pytest.FixtureRequest, kind: str
) -> None:
    """Sent while NATS is away, a delivery could not be recorded, and the message
    would be delivered again when offered again: the end of data is not sent, to
    a relay (SMTP) or a mail store (LMTP) alike."""
    sink: SmtpSink = request.getfixturevalue("sink" if kind == "smtp" else "lmtp_sink")
    cfg = routed(harness, sink, kind)
    await harness.js.add_consumer(MESSAGES_STREAM, first_consumer_config(cfg))
    await harness.start(cfg)
    sink.rcpt_delay = 1.0
    unsent = metric("elemta_delivery_attempts_total", {"result": "unsent"})
    await store(harness, ["bob@relay.test"])
    deadline = time.monotonic() + 10.0
    while not sink.rcpt_log:  # the attempt is under way
        assert time.monotonic() < deadline, "no attempt"
        await asyncio.sleep(0.02)
    nats_server.stop()
    while metric("elemta_delivery_attempts_total", {"result": "unsent"}) == unsent:
        assert time.monotonic() < deadline + 10.0, "the attempt went on"
        await asyncio.sleep(0.05)
    assert sink.messages == [] and sink.data_attempts == 0  # no end of data went out
    sink.rcpt_delay = 0.0
    nats_server.start()
    deadline = time.monotonic() + 30.0
    while not sink.messages:  # offered again once NATS is back
        assert time.monotonic() < deadline, "not delivered after NATS came back"
        await asyncio.sleep(0.05)
    assert [m.rcpt_tos for m in sink.messages] == [["bob@relay.test"]]
    while True:  # ended and acked, and not sent a second time meanwhile
        info = await harness.js.consumer_info(MESSAGES_STREAM, FIRST_CONSUMER)
        if info.num_ack_pending == 0 and info.num_pending == 0:
            break
        assert time.monotonic() < deadline, "the message was never acknowledged"
        await asyncio.sleep(0.05)
    assert len(sink.messages) == 1
