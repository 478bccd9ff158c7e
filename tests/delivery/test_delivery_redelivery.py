"""A message or job offered again after its report was stored (the ack was lost:
the process killed just after the report, the ack gone with a nats-server node)
is acked, not delivered a second time; one whose report is not stored is."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable

import nats
import pytest
from delivery_harness import BODY, Harness, metric
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from elemta.common.config import Config
from elemta.common.envelope import DeliveryJob, Envelope, FirstAttempt, new_queue_id
from elemta.common.history import batch_subject
from elemta.common.jetstream import (
    DELIVERY_CONSUMER,
    DELIVERY_STREAM,
    ENVELOPE_HEADER,
    FIRST_CONSUMER,
    MESSAGES_STREAM,
    STATE_BUCKET,
    delivery_consumer_config,
    first_consumer_config,
    open_bucket,
)
from elemta.common.names import CLAIMS_BUCKET
from elemta.common.replies import Reply
from elemta.delivery.outcome import Delivery, Reporter
from elemta.delivery.redelivery import LEFTOVER, Reported

from support.natsserver import NatsServer
from support.smtpsink import SmtpSink

ACK_WAIT = 1.0  # seconds before a message taken and not acked is offered again


def routed(harness: Harness, sink: SmtpSink) -> Config:
    cfg = harness.config()
    routes = {"relay.test": f"smtp:[127.0.0.1]:{sink.port}"}
    return cfg.model_copy(update={"transport": cfg.transport.model_copy(update={"routes": routes})})


async def until(check: Callable[[], Awaitable[bool]], within: float = 15.0) -> None:
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def received(sink: SmtpSink, count: int) -> list[list[str]]:
    async def enough() -> bool:
        return len(sink.messages) >= count

    await until(enough)
    return [m.rcpt_tos for m in sink.messages]


def reported() -> float:
    return metric("elemta_delivery_attempts_total", {"result": "reported"})


async def take_without_ack(harness: Harness, stream: str, consumer: str, subject: str) -> int:
    """What a killed delivery process did: take the next message and never ack it.
    Returns its stream sequence."""
    sub = await harness.js.pull_subscribe_bind(consumer, stream)
    [msg] = await sub.fetch(1, timeout=10)
    assert msg.subject.startswith(subject)
    await sub.unsubscribe()
    return msg.metadata.sequence.stream


async def first_consumer(harness: Harness, cfg: Config) -> None:
    config = first_consumer_config(cfg)
    config.ack_wait = ACK_WAIT
    await harness.js.add_consumer(MESSAGES_STREAM, config)


async def settled(harness: Harness, stream: str, consumer: str) -> bool:
    info = await harness.js.consumer_info(stream, consumer)
    return info.num_ack_pending == 0 and info.num_pending == 0


async def test_a_message_offered_again_after_its_report_was_stored_is_not_delivered_twice(
    harness: Harness, sink: SmtpSink
) -> None:
    cfg = routed(harness, sink)
    await first_consumer(harness, cfg)
    _qid, seq = await harness.store("alice@sender.test", ["bob@relay.test"])
    taken = await take_without_ack(harness, MESSAGES_STREAM, FIRST_CONSUMER, "elemta.msg.")
    assert taken == seq
    # the killed process had delivered it and stored its report; the ack never came
    raw = await harness.js.get_msg(MESSAGES_STREAM, seq=seq)
    env = Envelope.from_header((raw.headers or {})[ENVELOPE_HEADER])
    await Reporter(harness.js, 2.0).publish_first(FirstAttempt(envelope=env, msg_seq=seq))
    before = reported()
    await harness.start(cfg)
    await until(lambda: settled(harness, MESSAGES_STREAM, FIRST_CONSUMER))
    assert reported() == before + 1
    assert sink.messages == []
    assert await harness.outcomes_stored() == 1  # the one report, not a second


async def test_a_message_a_restarted_server_hands_out_as_new_after_its_report_is_not_delivered(
    harness: Harness, sink: SmtpSink
) -> None:
    """nats-server killed with SIGKILL forgets the last moments of its consumers'
    progress: a message handed out, reported and acked comes again as new
    (num_delivered 1). Stored before the delivery process connected, it is looked
    up first."""
    cfg = routed(harness, sink)
    await first_consumer(harness, cfg)
    _qid, seq = await harness.store("alice@sender.test", ["bob@relay.test"])
    raw = await harness.js.get_msg(MESSAGES_STREAM, seq=seq)
    env = Envelope.from_header((raw.headers or {})[ENVELOPE_HEADER])
    await Reporter(harness.js, 2.0).publish_first(FirstAttempt(envelope=env, msg_seq=seq))
    before = reported()
    await harness.start(cfg)  # connects after the message was stored
    await until(lambda: settled(harness, MESSAGES_STREAM, FIRST_CONSUMER))
    assert reported() == before + 1
    assert sink.messages == []
    # stored while connected and not reported: delivered
    await harness.store("alice@sender.test", ["carol@relay.test"])
    assert await received(sink, 1) == [["carol@relay.test"]]
    assert reported() == before + 1


async def test_a_message_offered_again_without_a_report_is_delivered(
    harness: Harness, sink: SmtpSink
) -> None:
    cfg = routed(harness, sink)
    await first_consumer(harness, cfg)
    await harness.store("alice@sender.test", ["bob@relay.test"])
    await take_without_ack(harness, MESSAGES_STREAM, FIRST_CONSUMER, "elemta.msg.")
    await harness.start(cfg)
    assert await received(sink, 1) == [["bob@relay.test"]]
    # delivered to everyone: delivery records its end and acks it, no report
    await until(lambda: settled(harness, MESSAGES_STREAM, FIRST_CONSUMER))
    assert await harness.outcomes_stored() == 0


async def test_a_message_offered_again_that_the_queue_took_over_is_not_attempted(
    harness: Harness, sink: SmtpSink
) -> None:
    """The queue already consumed the report: finished (message deleted) or holding
    the message's state."""
    cfg = routed(harness, sink)
    await first_consumer(harness, cfg)
    state = await harness.js.key_value(STATE_BUCKET)
    finished, _ = await harness.store("alice@sender.test", ["bob@relay.test"])
    held, _ = await harness.store("alice@sender.test", ["carol@relay.test"])
    sub = await harness.js.pull_subscribe_bind(FIRST_CONSUMER, MESSAGES_STREAM)
    assert len(await sub.fetch(2, timeout=10)) == 2
    await sub.unsubscribe()
    await harness.js.purge_stream(MESSAGES_STREAM, subject=f"elemta.msg.{finished}")
    await state.put(held, b"{}")
    before = reported()
    await harness.start(cfg)
    await until(lambda: settled(harness, MESSAGES_STREAM, FIRST_CONSUMER))
    assert reported() == before + 1  # the deleted one is never offered again
    assert sink.messages == []


async def test_a_job_offered_again_after_its_outcome_was_stored_is_not_delivered_twice(
    harness: Harness, sink: SmtpSink
) -> None:
    cfg = routed(harness, sink)
    jobs_config = delivery_consumer_config(cfg)
    jobs_config.ack_wait = ACK_WAIT
    await harness.js.add_consumer(DELIVERY_STREAM, jobs_config)  # updates it
    route = f"smtp:[127.0.0.1]:{sink.port}"
    first = await harness.submit(route, ["bob@relay.test"])
    await harness.submit(route, ["carol@relay.test"])
    sub = await harness.js.pull_subscribe_bind(DELIVERY_CONSUMER, DELIVERY_STREAM)
    jobs = await sub.fetch(2, timeout=10)
    await sub.unsubscribe()
    # the first job's outcome was stored before its process died; the other's not
    job = DeliveryJob.decode(jobs[0].data)
    assert job.id == first
    delivered = Delivery.everyone(job, "sink", Reply(250, "2.0.0", "Ok"))
    await Reporter(harness.js, 2.0).publish(job, delivered, jobs[0].metadata.sequence.stream)
    await harness.start(cfg)
    assert await received(sink, 1) == [["carol@relay.test"]]
    await until(lambda: settled(harness, DELIVERY_STREAM, DELIVERY_CONSUMER))
    assert len(sink.messages) == 1


async def test_a_lookup_without_an_answer_is_tried_again_before_the_message_is_attempted(
    harness: Harness, nats_server: NatsServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A cluster electing a leader or a node restarting answers nothing for a moment:
    the lookup waits for it rather than delivering the message a second time."""
    qid, seq = await harness.store("alice@sender.test", ["bob@relay.test"])
    raw = await harness.js.get_msg(MESSAGES_STREAM, seq=seq)
    env = Envelope.from_header((raw.headers or {})[ENVELOPE_HEADER])
    await Reporter(harness.js, 2.0).publish_first(FirstAttempt(envelope=env, msg_seq=seq))
    caplog.set_level(logging.DEBUG, logger="elemta.delivery.redelivery")
    nc = await nats.connect(nats_server.url, reconnect_time_wait=0.2, max_reconnect_attempts=-1)
    try:
        reported_already = Reported(nc.jetstream(timeout=0.5), patience=30.0)
        await asyncio.to_thread(nats_server.stop, True)
        looking = asyncio.create_task(reported_already.first(qid, seq))

        async def unanswered() -> bool:
            return "no answer yet" in caplog.text

        await until(unanswered)
        assert not looking.done()
        await asyncio.to_thread(nats_server.start)
        assert await asyncio.wait_for(looking, 30) == "its report is stored"
    finally:
        await nc.close()


async def test_a_lookup_tells_a_stored_message_of_any_class_from_a_finished_one(
    harness: Harness,
) -> None:
    """Normal mail is on ``elemta.msg.<id>``, other classes on ``elemta.<class>.msg.<id>``:
    either is still to be attempted while stored, and finished once deleted."""
    lookups = Reported(harness.js)
    normal, normal_seq = await harness.store("alice@sender.test", ["bob@relay.test"])
    high = new_queue_id()
    env = Envelope(high, "alice@sender.test", ["carol@relay.test"], time.time(), size=len(BODY))
    ack = await harness.js.publish(
        f"elemta.high.msg.{high}", BODY, headers={ENVELOPE_HEADER: env.to_header()}
    )
    assert await lookups.first(normal, normal_seq) == ""
    assert await lookups.first(high, ack.seq) == ""
    await harness.js.delete_msg(MESSAGES_STREAM, ack.seq)
    await harness.js.purge_stream(MESSAGES_STREAM, subject=f"elemta.msg.{normal}")
    assert await lookups.first(normal, normal_seq) == "it is finished"
    assert await lookups.first(high, ack.seq) == "it is finished"


async def test_a_lookup_of_a_large_message_does_not_read_its_body(
    harness: Harness, nats_server: NatsServer
) -> None:
    """Right after a (re)connection every message is looked up; one of 1 MB must not
    come over the wire for it (it used to, base64 in JSON)."""
    qid, seq = await harness.store("alice@sender.test", ["bob@relay.test"], b"x" * 1_000_000)
    nc = await nats.connect(nats_server.url)
    try:
        before = nc.stats["in_bytes"]
        assert await Reported(nc.jetstream()).first(qid, seq) == ""
        assert nc.stats["in_bytes"] - before < 20_000
    finally:
        await nc.close()


async def test_a_finished_message_still_stored_after_a_server_restart_is_acked_not_delivered(
    harness: Harness, nats_server: NatsServer, sink: SmtpSink
) -> None:
    """Its history says ``done`` (it was delivered; the process was killed between
    that record and the ack), and nats-server was killed and started again:
    handed out again, it is acked, not delivered a second time (its copy is the
    queue's to remove in bulk)."""
    cfg = routed(harness, sink)
    await first_consumer(harness, cfg)
    qid, _seq = await harness.store("alice@sender.test", ["bob@relay.test"])
    done = [{"type": t, "at": time.time(), "id": qid} for t in ("accepted", "delivered", "done")]
    await harness.js.publish(f"elemta.events.{qid}", json.dumps(done).encode())
    await asyncio.to_thread(nats_server.stop, True)  # SIGKILL
    await asyncio.to_thread(nats_server.start)

    async def reconnected() -> bool:
        try:
            await harness.js.stream_info(MESSAGES_STREAM)
        except Exception:
            return False
        return True

    await until(reconnected, within=30)
    before = reported()
    await harness.start(cfg)  # connects after the message was stored
    await until(lambda: settled(harness, MESSAGES_STREAM, FIRST_CONSUMER))
    assert reported() == before + 1
    assert sink.messages == []


async def test_a_message_another_process_attempts_after_a_restart_is_left_to_it(
    harness: Harness, sink: SmtpSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a server restart two processes can hold one message: the one that
    took it before the restart looks it up and claims it, the other gets it again
    from the restarted server and finds nothing reported yet. The claim makes the
    second leave it alone; once the first recorded its end, the message is acked
    on its next offer and delivered once."""
    monkeypatch.setattr("elemta.delivery.first.CLAIMED_RETRY", 0.3)
    cfg = routed(harness, sink)
    await first_consumer(harness, cfg)
    qid, seq = await harness.store("alice@sender.test", ["bob@relay.test"])
    assert await take_without_ack(harness, MESSAGES_STREAM, FIRST_CONSUMER, "elemta.msg.") == seq
    claims = await open_bucket(harness.js, CLAIMS_BUCKET, ttl=cfg.delivery.ack_wait)
    other = Reported(harness.js, claims=claims, owner="the other process")
    assert await other.first(qid, seq) == ""
    assert await other.claim(f"first.{qid}")  # ... and it is attempting it now
    before = metric("elemta_delivery_attempts_total", {"result": "claimed"})
    await harness.start(cfg)

    async def left_alone() -> bool:
        return metric("elemta_delivery_attempts_total", {"result": "claimed"}) >= before + 2

    await until(left_alone)
    assert sink.messages == []
    raw = await harness.js.get_msg(MESSAGES_STREAM, seq=seq)  # the other one ends it
    env = Envelope.from_header((raw.headers or {})[ENVELOPE_HEADER])
    await Reporter(harness.js, 2.0).publish_first(FirstAttempt(envelope=env, msg_seq=seq))
    await until(lambda: settled(harness, MESSAGES_STREAM, FIRST_CONSUMER))
    assert sink.messages == []
    assert not await other.claim(f"first.{qid}")  # claimed until the TTL


async def test_what_was_stored_before_the_connection_is_told_by_stream_sequence(
    harness: Harness,
) -> None:
    """Looked up: what was stored before the (re)connection, and anything offered
    again. Not looked up: a message stored after it, even within the seconds the
    clock alone would have to allow; after a loss of the connection, the clock
    decides again until the sequences are read anew."""
    await harness.store("alice@sender.test", ["bob@relay.test"])
    lookups = Reported(harness.js, connected_at=time.time)
    lookups.connection_changed(True)
    await lookups.sequences_read()
    await harness.store("alice@sender.test", ["carol@relay.test"])
    sub = await harness.js.pull_subscribe("elemta.msg.>", stream=MESSAGES_STREAM)
    before, after = await sub.fetch(2, timeout=10)
    assert lookups.worth_asking(before)
    assert not lookups.worth_asking(after)
    lookups.connection_changed(False)  # lost: stored 0 s after "now" is within the margin
    assert lookups.worth_asking(after)
    lookups.connection_changed(True)  # made again: "after" is now from before it
    await lookups.sequences_read()
    assert lookups.worth_asking(after)
    await harness.store("alice@sender.test", ["dave@relay.test"])
    [later] = await sub.fetch(1, timeout=10)
    assert not lookups.worth_asking(later)
    await later.nak()
    [again] = await sub.fetch(1, timeout=10)
    assert again.metadata.num_delivered == 2 and lookups.worth_asking(again)
    await sub.unsubscribe()


async def test_a_message_whose_events_are_in_a_batch_record_is_a_leftover(
    harness: Harness,
) -> None:
    """Delivery stores the history of what it ends several messages to a record and
    leaves the copy to the queue's bulk removal: a message handed out again (its
    ack lost, or as new by a restarted server) is found ended there, in a record
    stored after an earlier lookup of its bucket too."""
    qid, seq = await harness.store("alice@sender.test", ["bob@relay.test"])
    done = [{"type": t, "at": time.time(), "id": qid} for t in ("accepted", "delivered", "done")]
    neighbour = qid[:-1] + ("B" if qid.endswith("A") else "A")
    record = {neighbour: done[:1], qid: done}
    await harness.js.publish(batch_subject(qid), json.dumps(record).encode())
    reported = Reported(harness.js)
    assert await reported.first(qid, seq) == LEFTOVER
    # the neighbour, stored too, ends later: a record its bucket gets after it was read
    stored = await harness.js.publish(f"elemta.msg.{neighbour}", b"x")
    assert await reported.first(neighbour, stored.seq) == ""
    await harness.js.publish(batch_subject(qid), json.dumps({neighbour: done}).encode())
    assert await reported.first(neighbour, stored.seq) == LEFTOVER


async def test_a_message_a_consumer_hands_out_again_as_new_below_what_it_gave_is_looked_up(
    harness: Harness,
) -> None:
    """A new consumer leader of a cluster that had not received the latest acks
    starts again from an earlier sequence, offering acked messages as new
    (``num_delivered`` 1) while the connection holds: emulated here by the same
    durable consumer created again from an earlier sequence."""
    lookups = Reported(harness.js, connected_at=time.time)
    lookups.connection_changed(True)
    await lookups.sequences_read()
    seqs = [(await harness.store("alice@sender.test", [f"r{n}@relay.test"]))[1] for n in range(3)]
    config = ConsumerConfig(
        durable_name="replayed", ack_policy=AckPolicy.EXPLICIT, filter_subject="elemta.msg.>"
    )
    await harness.js.add_consumer(MESSAGES_STREAM, config)
    sub = await harness.js.pull_subscribe_bind("replayed", stream=MESSAGES_STREAM)
    first = await sub.fetch(3, timeout=10)
    assert [lookups.worth_asking(m) for m in first] == [False, False, False]
    for m in first:
        await m.ack()
    await sub.unsubscribe()

    await harness.js.delete_consumer(MESSAGES_STREAM, "replayed")
    config.deliver_policy = DeliverPolicy.BY_START_SEQUENCE
    config.opt_start_seq = seqs[1]
    await harness.js.add_consumer(MESSAGES_STREAM, config)
    sub = await harness.js.pull_subscribe_bind("replayed", stream=MESSAGES_STREAM)
    again = await sub.fetch(2, timeout=10)
    assert [m.metadata.num_delivered for m in again] == [1, 1]
    assert [lookups.worth_asking(m) for m in again] == [True, True]
    await harness.store("alice@sender.test", ["later@relay.test"])
    [later] = await sub.fetch(1, timeout=10)
    assert not lookups.worth_asking(later)  # new to this consumer: no lookup
    await sub.unsubscribe()


async def test_after_a_new_consumer_leader_everything_stored_before_is_looked_up(
    harness: Harness,
) -> None:
    """A new leader may hand out, as new, messages whose acks it never received:
    until the last sequences are read again every message is looked up, then
    those stored before the change; later ones are not."""
    lookups = Reported(harness.js, connected_at=time.time)
    lookups.connection_changed(True)
    await lookups.sequences_read()
    await harness.store("alice@sender.test", ["bob@relay.test"])
    sub = await harness.js.pull_subscribe("elemta.msg.>", stream=MESSAGES_STREAM)
    [before] = await sub.fetch(1, timeout=10)
    assert not lookups.worth_asking(before)  # stored after the connection

    lookups.leader_changed()
    fresh = Reported(harness.js, connected_at=time.time)  # the same message, another process
    fresh.connection_changed(True)
    await fresh.sequences_read()
    fresh.leader_changed()
    assert fresh.worth_asking(before)  # not read yet: everything
    await fresh.sequences_read()
    assert fresh.worth_asking(before)  # stored before the change
    await harness.store("alice@sender.test", ["carol@relay.test"])
    [after] = await sub.fetch(1, timeout=10)
    assert not fresh.worth_asking(after)
    await sub.unsubscribe()


async def test_the_service_looks_up_after_jetstream_says_a_consumer_has_a_new_leader(
    harness: Harness, sink: SmtpSink, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = routed(harness, sink)
    await first_consumer(harness, cfg)
    await harness.start(cfg)
    caplog.set_level(logging.INFO, logger="elemta.delivery.service")
    # what nats-server publishes when a consumer's leader changes in a cluster
    await harness.nc.publish(
        "$JS.EVENT.ADVISORY.CONSUMER.LEADER_ELECTED.ELEMTA_MESSAGES.delivery-first", b"{}"
    )

    async def noticed() -> bool:
        return any("has a new leader" in r.getMessage() for r in caplog.records)

    await until(noticed)
