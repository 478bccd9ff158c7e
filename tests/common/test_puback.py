"""The lean JetStream publish: the same answers as ``JetStreamContext.publish``."""

from __future__ import annotations

import nats
import nats.errors
import pytest
from nats.js.api import StreamConfig
from nats.js.errors import APIError, NoStreamResponseError

from elemta.common.puback import header_block, publish_acked

from support.natsserver import NatsServer


async def test_a_stored_message_returns_its_sequence_with_its_headers(
    nats_server: NatsServer,
) -> None:
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    await js.add_stream(StreamConfig(name="T", subjects=["t.>"]))
    headers = header_block({"Nats-Msg-Id": "one", "Elemta-Envelope": '{"a":1}'})
    assert await publish_acked(nc, "t.a", b"body", headers, 2.0) == 1
    assert await publish_acked(nc, "t.b", b"more", headers, 2.0) == 1  # a duplicate id
    assert await publish_acked(nc, "t.b", b"more", header_block({"X": "y"}), 2.0) == 2
    stored = await js.get_msg("T", 1)
    assert stored.data == b"body" and (stored.headers or {})["Elemta-Envelope"] == '{"a":1}'
    await nc.close()


async def test_a_subject_no_stream_takes_is_refused(nats_server: NatsServer) -> None:
    nc = await nats.connect(nats_server.url)
    with pytest.raises(NoStreamResponseError):
        await publish_acked(nc, "nowhere", b"x", header_block({"A": "b"}), 2.0)
    await nc.close()


async def test_a_store_the_stream_refuses_raises_its_error(nats_server: NatsServer) -> None:
    nc = await nats.connect(nats_server.url)
    await nc.jetstream().add_stream(StreamConfig(name="T", subjects=["t.>"]))
    with pytest.raises(APIError):
        await publish_acked(nc, "t.a", b"x", header_block({"Nats-Expected-Stream": "OTHER"}), 2.0)
    await nc.close()


async def test_no_puback_in_time_is_a_timeout(nats_server: NatsServer) -> None:
    nc = await nats.connect(nats_server.url)
    await nc.subscribe("silent")  # someone listens, nobody answers
    with pytest.raises(nats.errors.TimeoutError):
        await publish_acked(nc, "silent", b"x", header_block({"A": "b"}), 0.2)
    assert not nc._resp_map  # nothing left waiting
    await nc.close()


def test_a_header_value_with_a_line_break_is_refused() -> None:
    with pytest.raises(ValueError):
        header_block({"A": "b\r\nInjected: yes"})
