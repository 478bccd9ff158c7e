"""One pass over a stream: the messages a short-lived pull consumer hands out until
the server's count of what is left reaches zero.

The API lists KV buckets with it (the last value of every key) and the queue's bulk
removal reads the stored messages from the oldest on (headers only). Ending on the
server's count rather than on a marker makes a pass neither stop early nor wait for
messages that will not come; the consumer acknowledges nothing, lives in memory
and is removed when the pass ends (or by the server after ``inactive_threshold``).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

__all__ = ["scan"]

FETCH = 500  # messages asked for at once


async def scan(
    js: JetStreamContext,
    stream: str,
    subject: str,
    *,
    last_per_subject: bool = False,
    start_seq: int = 0,
    headers_only: bool = False,
    limit: int,
    wait: float,
) -> AsyncGenerator[Msg, None]:
    """Up to ``limit`` messages of ``stream`` on ``subject``, in stream order, fetched
    as the caller goes: from ``start_seq`` (0: the first), or the last one per
    subject. Use it with ``contextlib.aclosing`` when the caller may stop early."""
    if last_per_subject:
        policy = DeliverPolicy.LAST_PER_SUBJECT
    elif start_seq:
        policy = DeliverPolicy.BY_START_SEQUENCE
    else:
        policy = DeliverPolicy.ALL
    sub = await js.pull_subscribe(
        subject,
        stream=stream,
        config=ConsumerConfig(
            deliver_policy=policy,
            opt_start_seq=start_seq or None,
            ack_policy=AckPolicy.NONE,
            headers_only=headers_only or None,
            inactive_threshold=60.0,
            mem_storage=True,
        ),
    )
    try:
        pending = (await sub.consumer_info()).num_pending or 0
        read = 0
        while pending and read < limit:
            for msg in await sub.fetch(min(pending, FETCH, limit - read), timeout=wait):
                pending = msg.metadata.num_pending
                read += 1
                yield msg
    finally:
        await sub.unsubscribe()
