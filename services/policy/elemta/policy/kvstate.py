"""JetStream KV buckets for the state policy replicas share (greylist, rate limits)."""

from __future__ import annotations

import logging

from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig
from nats.js.errors import BadRequestError
from nats.js.kv import KeyValue

__all__ = ["open_bucket"]

log = logging.getLogger(__name__)


async def open_bucket(js: JetStreamContext, bucket: str, ttl: float) -> KeyValue:
    """Create the bucket with ``ttl``, or use it as it is when it already exists with
    another configuration (a changed setting must not stop the service)."""
    try:
        return await js.create_key_value(KeyValueConfig(bucket=bucket, ttl=ttl, history=1))
    except BadRequestError as exc:
        log.warning("bucket %s exists with another configuration, using it: %s", bucket, exc)
        return await js.key_value(bucket)
