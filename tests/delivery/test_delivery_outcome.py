"""Reporting an outcome: a publish that finds no stream (a JetStream cluster
electing a leader, a node gone) is tried again rather than the job given back,
which would deliver the mail a second time."""

from __future__ import annotations

import asyncio
import logging
import time

import nats
import pytest
from delivery_harness import until

from elemta.common.config import Config
from elemta.common.envelope import DeliveryJob, Envelope, FirstAttempt, RecipientResult
from elemta.common.jetstream import OUTCOMES_STREAM, stream_configs
from elemta.delivery.outcome import Delivery, Reporter

from support.natsserver import NatsServer

JOB = DeliveryJob(
    id="01TESTOUTCOME0000000",
    dest="mx:a.test",
    route={"kind": "mx"},
    domain="a.test",
    sender="s@b.test",
    recipients=["r@a.test"],
    msg_seq=1,
)
DELIVERED = Delivery("mx.a.test", [RecipientResult("r@a.test", "delivered", 250, "2.0.0", "Ok")])
ENVELOPE = Envelope(
    id=JOB.id,
    sender="s@b.test",
    recipients=["r@a.test"],
    received_at=time.time(),
    client_ip="192.0.2.1",
    client_helo="client.test",
    size=10,
)


async def _report(reporter: Reporter, kind: str) -> None:
    """The report of a retry (an outcome) or of a first attempt."""
    if kind == "outcome":
        await reporter.publish(JOB, DELIVERED, 7)
    else:
        await reporter.publish_first(FirstAttempt(envelope=ENVELOPE, msg_seq=7))


@pytest.mark.parametrize("kind", ["outcome", "first attempt"])
async def test_an_outcome_without_a_stream_to_take_it_is_tried_again_and_stored_once(
    nats_server: NatsServer, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    caplog.set_level(logging.WARNING, logger="elemta.delivery.outcome")
    nc = await nats.connect(nats_server.url)
    try:
        js = nc.jetstream(timeout=5)
        reporter = Reporter(js, publish_timeout=1.0, patience=20.0)
        publishing = asyncio.create_task(_report(reporter, kind))
        await until(lambda: "outcome not stored yet" in caplog.text)
        assert not publishing.done()
        (outcomes,) = [
            sc for sc in stream_configs(Config.model_validate({})) if sc.name == OUTCOMES_STREAM
        ]
        await js.add_stream(outcomes)  # the stream answers again
        await asyncio.wait_for(publishing, 20)
        # the same report again (the job came back before its ack): stored once
        await _report(reporter, kind)
        assert (await js.stream_info(OUTCOMES_STREAM)).state.messages == 1
    finally:
        await nc.close()


async def test_an_outcome_that_cannot_be_stored_within_the_patience_raises(
    nats_server: NatsServer,
) -> None:
    nc = await nats.connect(nats_server.url)
    try:
        reporter = Reporter(nc.jetstream(timeout=5), publish_timeout=0.5, patience=1.0)
        with pytest.raises(Exception):  # noqa: B017, PT011 -- whatever NATS raised
            await reporter.publish(JOB, DELIVERED, 7)
    finally:
        await nc.close()
