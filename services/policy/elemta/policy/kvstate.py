"""JetStream KV buckets for the state policy replicas share (greylist, rate limits).

The opener lives in :mod:`elemta.common.jetstream`, shared with delivery's buckets.
"""

from elemta.common.jetstream import open_bucket

__all__ = ["open_bucket"]
