"""Deleting a stored message: a message already gone counts as deleted, any other
refusal is a failure (whoever deletes then never records the message finished
while its copy is still there). The generic "delete failed" answer (10057) counts
as gone only when it says the message is not there: "no message found" or
"stream store EOF"."""

from __future__ import annotations

from collections.abc import AsyncIterator

import nats
import pytest
from nats.aio.client import Client as NATS
from nats.js.api import StreamConfig
from nats.js.errors import NotFoundError

from elemta.common.jetstream import delete_stream_msg

from support.natsserver import NatsServer


@pytest.fixture
async def nc(nats_server: NatsServer) -> AsyncIterator[NATS]:
    client = await nats.connect(nats_server.url)
    await client.jetstream().add_stream(StreamConfig(name="T", subjects=["t.>"]))
    yield client
    await client.close()


async def test_a_delete_removes_the_message_and_a_second_one_counts_as_done(nc: NATS) -> None:
    js = nc.jetstream()
    for n in range(3):
        await js.publish(f"t.{n}", b"x")
    for seq in (1, 1, 2, 2):  # the first in the stream, then one in the middle
        await delete_stream_msg(nc, "T", seq)
    with pytest.raises(NotFoundError):
        await js.get_msg("T", seq=2)
    assert (await js.stream_info("T")).state.messages == 1


async def test_a_sequence_past_the_last_counts_as_gone_and_a_missing_stream_raises(
    nc: NATS,
) -> None:
    await nc.jetstream().publish("t.0", b"x")
    await delete_stream_msg(nc, "T", 99)
    with pytest.raises(NotFoundError):
        await delete_stream_msg(nc, "NO_SUCH_STREAM", 1)
