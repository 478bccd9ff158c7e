"""The durability contract: 250 only after the PubAck; 451 and nothing stored otherwise."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import nats
from ingress_harness import (
    MESSAGE,
    RawSMTP,
    body_object,
    create_streams,
    make_config,
    message_count,
    queue_id_of,
    send,
    stored,
    wait_until,
)

from elemta.common.envelope import Envelope, new_queue_id
from elemta.common.history import batch_subject
from elemta.common.jetstream import ENVELOPE_HEADER, ensure_streams
from elemta.ingress.handoff import FINISHED_ALREADY, Handoff

QUEUE_DOWN = b"4.3.0 Queue temporarily unavailable, try again later"


def test_with_nats_stopped_data_gets_451_quickly_and_after_restart_nothing_is_lost(
    nats_server, ingress_factory
):
    runner = ingress_factory(
        {"nats": {"publish_timeout": 1.0}}, nats_url=nats_server.url, wait_stream=False
    )
    create_streams(nats_server.url, runner.cfg)
    wait_until(lambda: runner.svc.handoff.stream_ready, what="stream")
    code, first = send(runner.port)
    assert code == 250

    nats_server.stop()
    wait_until(lambda: "nats" in runner.failing(), what="NATS disconnect noticed")
    started = time.monotonic()
    code, text = send(runner.port)
    assert (code, text) == (451, QUEUE_DOWN)
    assert time.monotonic() - started < 1.0 + 2.0

    nats_server.start()
    wait_until(lambda: not runner.failing(), timeout=15, what="NATS reconnect")
    code, third = send(runner.port)
    assert code == 250
    assert stored(nats_server.url, queue_id_of(first)) is not None
    assert stored(nats_server.url, queue_id_of(third)) is not None
    assert message_count(nats_server.url) == 2


def test_a_pubAck_that_does_not_come_in_time_gets_451_and_a_late_store_is_purged(
    nats_server, ingress_factory
):
    runner = ingress_factory(
        {"nats": {"publish_timeout": 1.0}}, nats_url=nats_server.url, wait_stream=False
    )
    create_streams(nats_server.url, runner.cfg)
    wait_until(lambda: runner.svc.handoff.stream_ready, what="stream")
    assert nats_server.proc is not None
    pid = nats_server.proc.pid
    os.kill(pid, signal.SIGSTOP)  # JetStream hangs: the publish is sent, no PubAck comes
    try:
        started = time.monotonic()
        code, text = send(runner.port)
        assert (code, text) == (451, QUEUE_DOWN)
        assert time.monotonic() - started < 1.0 + 2.0
    finally:
        os.kill(pid, signal.SIGCONT)
    # The server now stores the late publish; ingress purges it, and once more
    # after any straggler must have landed.
    wait_until(lambda: runner.svc.handoff.purged == 1, timeout=30, what="both purges")
    assert message_count(nats_server.url) == 0
    assert send(runner.port)[0] == 250


def test_until_the_stream_exists_ingress_is_not_ready_and_data_gets_451(
    nats_server, ingress_factory
):
    runner = ingress_factory(nats_url=nats_server.url, wait_stream=False)
    assert "stream" in runner.failing()
    with RawSMTP(runner.port) as c:
        c.reply()
        c.cmd(b"EHLO client.test")
        c.cmd(b"MAIL FROM:<a@client.test>")
        c.cmd(b"RCPT TO:<b@local.test>")
        assert c.cmd(b"DATA") == b"451 " + QUEUE_DOWN + b"\r\n"
    create_streams(nats_server.url, runner.cfg)
    wait_until(lambda: not runner.failing(), what="readiness")
    assert send(runner.port)[0] == 250


def test_a_body_over_the_inline_limit_goes_to_the_object_store(ingress_factory, shared_nats):
    runner = ingress_factory({"nats": {"inline_body_limit": 2048}})
    body = MESSAGE + ("z" * 76 + "\r\n") * 200
    code, text = send(runner.port, body)
    assert code == 250
    qid = queue_id_of(text)
    msg = stored(shared_nats.url, qid)
    assert msg is not None and msg.data == b""
    env = msg.envelope
    assert env.body_object == qid
    obj = body_object(shared_nats.url, qid)
    assert obj is not None and len(obj) == env.size
    assert obj.startswith(b"Received: from client.test") and obj.endswith(body.encode())


def test_a_body_under_the_inline_limit_stays_inline(ingress_factory, shared_nats):
    runner = ingress_factory({"nats": {"inline_body_limit": 2048}})
    code, text = send(runner.port)
    assert code == 250
    msg = stored(shared_nats.url, queue_id_of(text))
    assert msg is not None and msg.envelope.body_object == "" and msg.data.endswith(b"Hello.\r\n")


def test_a_store_that_lands_after_its_deadline_is_answered_451_and_carries_that_deadline(
    nats_server, ingress_factory
):
    runner = ingress_factory(
        {"nats": {"publish_timeout": 1.0}}, nats_url=nats_server.url, wait_stream=False
    )
    create_streams(nats_server.url, runner.cfg)
    wait_until(lambda: runner.svc.handoff.stream_ready, what="stream")
    assert nats_server.proc is not None
    pid = nats_server.proc.pid
    os.kill(pid, signal.SIGSTOP)  # the publish is sent; nothing is stored yet
    resumed = threading.Event()

    def resume_after_the_deadline() -> None:
        time.sleep(1.4)  # the deadline (1.0 s) has passed; ingress is asking the stream
        os.kill(pid, signal.SIGCONT)
        resumed.set()

    threading.Thread(target=resume_after_the_deadline, daemon=True).start()
    try:
        code, text = send(runner.port)
    finally:
        resumed.wait(5)
        os.kill(pid, signal.SIGCONT)
    # The server stored the publish late and then answered: stored after the deadline.
    assert (code, text) == (451, QUEUE_DOWN)
    assert runner.svc.handoff.found == 0
    wait_until(lambda: runner.svc.handoff.purged == 1, timeout=30, what="both purges")
    assert message_count(nats_server.url) == 0


async def test_an_unconfirmed_store_is_ours_only_when_stored_by_its_deadline(
    nats_server, tmp_path: Path
) -> None:
    cfg = make_config(tmp_path, nats_server.url, "127.0.0.1:1")
    nc = await nats.connect(nats_server.url)
    try:
        await ensure_streams(nc.jetstream(), cfg)
        env = Envelope(new_queue_id(), "a@client.test", ["b@local.test"], time.time())
        await nc.jetstream().publish(
            f"elemta.msg.{env.id}", b"hello", headers={ENVELOPE_HEADER: env.to_header()}
        )
        handoff = Handoff(cfg)
        handoff.attach(nc)
        subject = f"elemta.msg.{env.id}"
        assert await handoff._stored_by(subject, time.time() + 5) > 0  # PubAck lost: 250
        assert await handoff._stored_by(subject, time.time() - 5) == 0  # stored late: 451
        assert await handoff._stored_by("elemta.msg.NOTTHERE", time.time() + 5) == 0
    finally:
        await nc.close()


async def test_an_unconfirmed_store_already_delivered_is_ours_and_a_withdrawn_one_is_not(
    nats_server, tmp_path: Path
) -> None:
    """A server killed between its fsync and its PubAck delivers the copy once it is
    back, often before ingress stops waiting: the copy is gone by the time ingress
    asks, and its history tells a delivered message (250: a 451 would make the
    client send it a second time) from one never stored or withdrawn (451)."""
    cfg = make_config(tmp_path, nats_server.url, "127.0.0.1:1")
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    try:
        await ensure_streams(js, cfg)
        handoff = Handoff(cfg)
        handoff.attach(nc)

        async def finished(history_subject: Callable[[str], str], record: object) -> str:
            env = Envelope(new_queue_id(), "a@client.test", ["b@local.test"], time.time())
            subject = f"elemta.msg.{env.id}"
            ack = await js.publish(subject, b"hi", headers={ENVELOPE_HEADER: env.to_header()})
            await js.publish(
                history_subject(env.id),
                json.dumps(record).replace("QID", env.id).encode(),
            )
            await js.delete_msg("ELEMTA_MESSAGES", ack.seq)
            return subject

        policy_only = {"type": "policy", "id": "QID", "action": "accept"}
        delivered = {"QID": [{"type": "accepted"}, {"type": "delivered"}, {"type": "done"}]}
        queue_done = [{"type": "delivered"}, {"type": "done"}]
        withdrawn = {"type": "withdrawn", "id": "QID"}
        own = "elemta.events.{}".format
        at_once = await finished(batch_subject, delivered)
        by_queue = await finished(own, queue_done)
        dropped = await finished(own, withdrawn)
        checked = await finished(own, policy_only)
        later = time.time() + 5

        assert await handoff._stored_by(at_once, later) == FINISHED_ALREADY  # 250
        assert await handoff._stored_by(by_queue, later) == FINISHED_ALREADY  # 250
        assert await handoff._stored_by(dropped, later) == 0  # 451
        assert await handoff._stored_by(checked, later) == 0  # 451: never in the queue
    finally:
        await nc.close()


def test_the_envelope_says_whether_the_message_can_go_out_on_data_as_it_is(
    ingress_factory, shared_nats
):
    """No line beginning with "." (CRLF only is a given after the DATA checks): the
    next hop gets it without delivery dot-stuffing it."""
    runner = ingress_factory()
    plain = MESSAGE + ("a line . with dots.\r\n" * 50)
    dotted = MESSAGE + ".a line that starts with a dot\r\n"
    lonely = MESSAGE + "before\r\n.\r\nafter\r\n"  # smtplib stuffs it: "..", one "."
    ready = {}
    for name, body in {"plain": plain, "dotted": dotted, "lonely": lonely}.items():
        code, text = send(runner.port, body)
        assert code == 250, text
        msg = stored(shared_nats.url, queue_id_of(text))
        assert msg is not None and msg.data.endswith(body.encode())
        ready[name] = msg.envelope.wire_ready
    assert ready == {"plain": True, "dotted": False, "lonely": False}
