"""JetStream stream definitions and the connection every service opens.

The queue service owns the streams: it calls :func:`ensure_streams` at start-up.
Every other service calls :func:`wait_for_streams` and reports not-ready until
they exist, so start order does not matter. The names of streams, subjects,
consumers and buckets are in :mod:`elemta.common.names` (and re-exported here).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import weakref
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import nats
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    KeyValueConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import APIError, BadRequestError, NotFoundError
from nats.js.kv import KeyValue

from .config import Config
from .envelope import Envelope
from .names import (
    BODIES_BUCKET,
    DEFERRED_STREAM,
    DEFERRED_SUBJECT,
    DELIVERY_CONSUMER,
    DELIVERY_STREAM,
    DELIVERY_SUBJECT,
    DUE_HEADER,
    ENVELOPE_HEADER,
    EVENTS_STREAM,
    EVENTS_SUBJECT,
    FIRST_CONSUMER,
    INTAKE_CONSUMER,
    KEPT_SUBJECT,
    MESSAGES_STREAM,
    MSG_SUBJECT,
    OUTCOME_SUBJECT,
    OUTCOMES_CONSUMER,
    OUTCOMES_STREAM,
    PRIORITY_CLASSES,
    STATE_BUCKET,
    class_prefix,
    delivery_consumer,
    first_consumer,
)
from .natsauth import NatsAuth, NatsTls
from .puback import request

__all__ = [
    "BODIES_BUCKET",
    "DEFERRED_STREAM",
    "DEFERRED_SUBJECT",
    "DELIVERY_CONSUMER",
    "DELIVERY_STREAM",
    "DELIVERY_SUBJECT",
    "DUE_HEADER",
    "ENVELOPE_HEADER",
    "EVENTS_STREAM",
    "EVENTS_SUBJECT",
    "FIRST_CONSUMER",
    "INTAKE_CONSUMER",
    "MESSAGES_STREAM",
    "MSG_SUBJECT",
    "KEPT_SUBJECT",
    "OUTCOME_SUBJECT",
    "OUTCOMES_CONSUMER",
    "OUTCOMES_STREAM",
    "STATE_BUCKET",
    "connect",
    "delete_stream_msg",
    "delivery_consumer_config",
    "first_consumer_config",
    "disconnect",
    "ensure_streams",
    "open_bucket",
    "set_replicas",
    "store_message",
    "stream_configs",
    "stream_replicas",
    "wait_for_streams",
]

log = logging.getLogger(__name__)


def stream_configs(cfg: Config) -> list[StreamConfig]:
    replicas = cfg.nats.replicas
    common = dict(storage=StorageType.FILE, num_replicas=replicas)
    return [
        StreamConfig(
            name=MESSAGES_STREAM,
            subjects=[f"{class_prefix(c)}msg.>" for c in PRIORITY_CLASSES] + [f"{KEPT_SUBJECT}.>"],
            retention=RetentionPolicy.LIMITS,
            discard=DiscardPolicy.NEW,
            duplicate_window=120.0,
            allow_direct=True,
            max_msg_size=-1,
            **common,  # type: ignore[arg-type]
        ),
        StreamConfig(
            name=DELIVERY_STREAM,
            subjects=[f"{class_prefix(c)}delivery.>" for c in PRIORITY_CLASSES],
            retention=RetentionPolicy.WORK_QUEUE,
            duplicate_window=120.0,
            **common,  # type: ignore[arg-type]
        ),
        StreamConfig(
            name=OUTCOMES_STREAM,
            subjects=[f"{OUTCOME_SUBJECT}.>"],
            retention=RetentionPolicy.WORK_QUEUE,
            duplicate_window=120.0,
            **common,  # type: ignore[arg-type]
        ),
        StreamConfig(
            name=DEFERRED_STREAM,
            subjects=[f"{DEFERRED_SUBJECT}.>"],
            retention=RetentionPolicy.LIMITS,
            duplicate_window=120.0,
            allow_direct=True,
            **common,  # type: ignore[arg-type]
        ),
        StreamConfig(
            name=EVENTS_STREAM,
            subjects=[f"{EVENTS_SUBJECT}.>"],
            retention=RetentionPolicy.LIMITS,
            max_age=30 * 86400.0,
            allow_direct=True,
            **common,  # type: ignore[arg-type]
        ),
    ]


def delivery_consumer_config(cfg: Config, klass: str = "normal") -> ConsumerConfig:
    """``delivery`` (or ``delivery-<class>``) on ELEMTA_DELIVERY: jobs, to every
    delivery process."""
    return ConsumerConfig(
        durable_name=delivery_consumer(klass),
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.ALL,
        ack_wait=cfg.delivery.ack_wait,
        max_deliver=-1,
        max_ack_pending=20000,
        filter_subject=f"{class_prefix(klass)}delivery.>",
    )


def first_consumer_config(cfg: Config, start_seq: int = 0, klass: str = "normal") -> ConsumerConfig:
    """``delivery-first`` on ELEMTA_MESSAGES: every stored message, body included, to
    one delivery process for its first attempt. ``start_seq``: where a consumer
    created for a stream that already has history starts (0: the beginning).
    ``klass``: a priority class other than normal has a consumer of its own."""
    return ConsumerConfig(
        durable_name=first_consumer(klass),
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.BY_START_SEQUENCE if start_seq else DeliverPolicy.ALL,
        opt_start_seq=start_seq or None,
        ack_wait=cfg.delivery.ack_wait,
        max_deliver=-1,
        max_ack_pending=20000,
        filter_subject=f"{class_prefix(klass)}msg.>",
    )


async def connect(
    cfg: Config,
    name: str,
    on_state: Callable[[bool], Awaitable[None] | None] | None = None,
    stop: asyncio.Event | None = None,
) -> NATS:
    """Connect with endless reconnects; ``on_state`` hears about (dis)connections."""

    async def _notify(up: bool) -> None:
        if on_state is not None:
            res = on_state(up)
            if asyncio.iscoroutine(res):
                await res

    async def disconnected() -> None:
        log.warning("nats disconnected")
        await _notify(False)

    async def reconnected() -> None:
        log.info("nats reconnected")
        await _notify(True)

    async def error_cb(exc: Exception) -> None:
        log.debug("nats error: %s", exc)

    servers = [u.strip() for u in cfg.nats.url.split(",") if u.strip()]
    # With endless reconnects the client never returns from a first connection to
    # a server that is down, and ignores cancellation while it tries. So wait for
    # a server to accept TCP first, where a stop request can still end the wait.
    while not await _any_reachable(servers, cfg.nats.connect_timeout):
        if stop is not None and stop.is_set():
            raise ConnectionError(f"stopped while waiting for NATS at {cfg.nats.url}")
        log.warning("cannot reach NATS at %s; retrying", cfg.nats.url)
        await asyncio.sleep(1.0)
    auth = nats_auth(cfg)
    tls: NatsTls | None = NatsTls(auth) if auth.wants_tls(servers) else None
    extra: dict[str, Any] = dict(auth.credentials())
    if tls is not None:
        extra["tls"] = tls.context
    nc = await nats.connect(
        **extra,
        servers=servers,
        name=name,
        connect_timeout=int(max(1, cfg.nats.connect_timeout)),
        max_reconnect_attempts=-1,
        reconnect_time_wait=1,
        allow_reconnect=True,
        disconnected_cb=disconnected,
        reconnected_cb=reconnected,
        error_cb=error_cb,
        pending_size=64 * 1024 * 1024,
    )
    if tls is not None:
        tls.start()  # a renewed certificate or CA is used from the next reconnection
        _TLS[nc] = tls
    await _notify(True)
    return nc


#: The TLS file watchers of open connections, stopped by :func:`disconnect`.
_TLS: weakref.WeakKeyDictionary[NATS, NatsTls] = weakref.WeakKeyDictionary()


def nats_auth(cfg: Config) -> NatsAuth:
    n = cfg.nats
    return NatsAuth(
        tls_ca=n.tls_ca,
        tls_cert=n.tls_cert,
        tls_key=n.tls_key,
        user=n.user,
        password=n.password.get_secret_value(),
        token=n.token.get_secret_value(),
        creds_file=n.creds_file,
    )


async def disconnect(nc: NATS, wait: float = 5.0) -> None:
    """Drain a live connection (pending publishes reach the server), else close it.

    Draining a connection whose server is gone waits for a reconnect that may
    never come; a service stopping then would hang until killed.
    """
    tls = _TLS.pop(nc, None)
    if tls is not None:
        await tls.stop()
    if nc.is_closed:
        return
    if nc.is_connected:
        try:
            await asyncio.wait_for(nc.drain(), wait)
            return
        except Exception as exc:
            log.debug("drain: %r", exc)
    with contextlib.suppress(Exception):
        await nc.close()


async def _any_reachable(servers: list[str], wait: float) -> bool:
    for url in servers:
        parsed = urlsplit(url if "://" in url else f"nats://{url}")
        try:
            _, writer = await asyncio.wait_for(
                asyncio.open_connection(parsed.hostname or "127.0.0.1", parsed.port or 4222),
                wait,
            )
        except (OSError, TimeoutError):
            continue
        writer.close()
        return True
    return False


#: What :func:`ensure_streams` compares before it updates a stream: an update is a
#: round through the cluster's metadata leader, skipped when nothing changed.
_COMPARED = (
    "subjects",
    "retention",
    "discard",
    "duplicate_window",
    "allow_direct",
    "max_age",
    "num_replicas",
    "max_msg_size",
)
ENSURE_PATIENCE = 60.0  # seconds ensure_streams keeps trying through elections and timeouts


def _differs(have: StreamConfig, want: StreamConfig) -> bool:
    return any(
        getattr(want, f) is not None and getattr(have, f) != getattr(want, f) for f in _COMPARED
    )


async def _patiently(what: str, op: Callable[[], Awaitable[Any]], deadline: float) -> Any:
    """Run ``op`` again after a timeout or an unavailable cluster (a leader election,
    a node restarting, a peer creating the same stream) until ``deadline``."""
    loop = asyncio.get_running_loop()
    while True:
        try:
            return await op()
        except (NotFoundError, BadRequestError):
            raise
        except Exception as exc:
            if loop.time() > deadline:
                raise
            log.info("%s not done yet, trying again: %r", what, exc)
            await asyncio.sleep(1.0)


async def ensure_streams(js: JetStreamContext, cfg: Config) -> None:
    """Create or update every stream, the state bucket and the body store.

    Several processes may do it at once (two queue processes, a restart): each
    step is idempotent and is tried again through the timeouts of a JetStream
    cluster that is electing leaders or creating replicas."""
    from nats.js.api import ObjectStoreConfig

    deadline = asyncio.get_running_loop().time() + ENSURE_PATIENCE
    for sc in stream_configs(cfg):
        assert sc.name is not None
        name = sc.name

        async def ensure(sc: StreamConfig = sc, name: str = name) -> None:
            try:
                info = await js.stream_info(name)
            except NotFoundError:
                try:
                    await js.add_stream(sc)
                    return
                except BadRequestError:  # created meanwhile by another process
                    info = await js.stream_info(name)
            if _differs(info.config, sc):
                await js.update_stream(sc)

        await _patiently(f"stream {name}", ensure, deadline)

    replicas = cfg.nats.replicas

    async def state() -> None:
        try:
            await js.create_key_value(
                KeyValueConfig(bucket=STATE_BUCKET, history=1, replicas=replicas)
            )
        except BadRequestError:  # there, with other settings: keep them, but replicate
            await set_replicas(js, f"KV_{STATE_BUCKET}", replicas)

    async def bodies() -> None:
        try:
            await js.create_object_store(
                BODIES_BUCKET, ObjectStoreConfig(bucket=BODIES_BUCKET, replicas=replicas)
            )
        except BadRequestError:
            await set_replicas(js, f"OBJ_{BODIES_BUCKET}", replicas)

    await _patiently(f"bucket {STATE_BUCKET}", state, deadline)
    await _patiently(f"object store {BODIES_BUCKET}", bodies, deadline)


async def set_replicas(js: JetStreamContext, stream: str, replicas: int) -> None:
    """Give an existing stream (a bucket's) ``replicas`` copies, keeping the rest."""
    info = await js.stream_info(stream)
    if info.config.num_replicas != replicas:
        info.config.num_replicas = replicas
        await js.update_stream(info.config)
        log.info("stream %s now has %d replica(s)", stream, replicas)


async def stream_replicas(js: JetStreamContext) -> int:
    """The replicas of ``ELEMTA_MESSAGES`` (set from ``nats.replicas`` by the queue
    service), which the buckets of the other services follow; 1 when unknown."""
    try:
        info = await js.stream_info(MESSAGES_STREAM)
    except Exception:
        return 1
    return int(info.config.num_replicas or 1)


async def wait_for_streams(
    js: JetStreamContext, names: list[str], stop: asyncio.Event | None = None
) -> None:
    """Block until every named stream exists (the queue service creates them)."""
    pending = list(names)
    while pending:
        try:
            await js.stream_info(pending[0])
            pending.pop(0)
            continue
        except Exception as exc:  # not found, or not connected yet
            log.debug("waiting for stream %s: %s", pending[0], exc)
        if stop is not None and stop.is_set():
            return
        await asyncio.sleep(0.5)


async def open_bucket(js: JetStreamContext, bucket: str, ttl: float) -> KeyValue:
    """A KV bucket a service keeps for itself (greylist, rate limits, MTA-STS
    policies ...): created with ``ttl`` (0: entries never expire), or used as it
    is when it already exists with another configuration (a changed setting must
    not stop the service). It is replicated as ``ELEMTA_MESSAGES`` is."""
    replicas = await stream_replicas(js)
    try:
        return await js.create_key_value(
            KeyValueConfig(bucket=bucket, ttl=ttl, history=1, replicas=replicas)
        )
    except BadRequestError as exc:
        log.warning("bucket %s exists with another configuration, using it: %s", bucket, exc)
        return await js.key_value(bucket)


async def store_message(
    js: JetStreamContext, env: Envelope, message: bytes, msg_id: str, wait: float = 5.0
) -> int:
    """Queue a message Elemta writes itself (a report, a notice), as ingress stores one:
    the envelope in its header, the message inline, ``Nats-Msg-Id`` against a repeat.
    The queue routes it like any other. Returns the stream sequence."""
    headers = {ENVELOPE_HEADER: env.to_header(), "Nats-Msg-Id": msg_id}
    ack = await js.publish(
        f"{MSG_SUBJECT}.{env.id}", message, timeout=wait, stream=MESSAGES_STREAM, headers=headers
    )
    return ack.seq


API_PREFIX = "$JS.API"
# JetStream error codes for "that message is not there (any more)": no message
# found, sequence not found.
_GONE_CODES = {10037, 10043}
# The generic "message deletion failed" (10057) says the message is gone only
# with the store's "no message found" or "stream store EOF" (a sequence past the
# last one); with anything else (a store closed or recovering after a restart, a
# block that could not be read) the message may still be there and the delete
# has failed.
_DELETE_FAILED = 10057
_GONE_TEXTS = ("no message found", "stream store eof")


async def delete_stream_msg(nc: NATS, stream: str, seq: int, wait: float = 5.0) -> None:
    """Delete one message by sequence without overwriting it on disk.

    ``JetStreamManager.delete_msg`` asks for a secure erase (the server rewrites
    the block with random bytes): about 500 deletes a second, which would cap the
    whole system; ``no_erase`` only marks the message deleted (tens of thousands
    a second). A message that is already gone counts as deleted; any other
    refusal raises, so that no one records a message as finished while its
    stored copy is still there.
    """
    resp = await request(
        nc,
        f"{API_PREFIX}.STREAM.MSG.DELETE.{stream}",
        b'{"seq":%d,"no_erase":true}' % seq,
        None,
        wait,
    )
    if not resp.data and (resp.headers or {}).get("Status") == "503":
        raise nats.errors.NoRespondersError
    err = json.loads(resp.data).get("error")
    if not err or err.get("err_code") in _GONE_CODES:
        return
    said = str(err.get("description", "")).lower()
    if err.get("err_code") == _DELETE_FAILED and any(text in said for text in _GONE_TEXTS):
        return
    APIError.from_error(err)  # raises the matching APIError subclass
    raise APIError(**err)
