"""The worker around the transports: concurrency, sharing, keepalive, shutdown, TLS."""

from __future__ import annotations

import asyncio
import datetime
import ssl
import time
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from delivery_harness import Harness, metric

from elemta.common.jetstream import DELIVERY_CONSUMER, DELIVERY_STREAM, delivery_consumer_config

from support.dnsserver import free_port
from support.smtpsink import SmtpSink


class Recorder:
    """aiosmtpd handler: takes every message, optionally slowly, noting TLS."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.messages: list[tuple[list[str], bool]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        await asyncio.sleep(self.delay)
        self.messages.append((list(envelope.rcpt_tos), session.ssl is not None))
        return "250 2.0.0 OK"


def self_signed_context(tmp: Path) -> ssl.SSLContext:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sink.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    (tmp / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tmp / "cert.pem", tmp / "key.pem")
    return ctx


async def test_many_jobs_to_one_peer_never_open_more_than_the_connection_limit(
    harness: Harness, sink: SmtpSink
) -> None:
    await harness.start(concurrency=16, max_connections_per_destination=2)
    opened = metric("elemta_delivery_connections_opened_total")
    route = f"smtp:[127.0.0.1]:{sink.port}"
    ids = [await harness.submit(route, [f"user{i}@example.test"]) for i in range(40)]

    for qid in ids:
        assert (await harness.outcome(qid)).results[0].status == "delivered"
    assert len(sink.wait_for(40)) == 40
    assert metric("elemta_delivery_connections_opened_total") - opened <= 2


async def test_two_workers_share_the_consumer_and_deliver_each_job_once(
    harness: Harness, sink: SmtpSink
) -> None:
    await harness.start(concurrency=4)
    await harness.start(concurrency=4)
    route = f"smtp:[127.0.0.1]:{sink.port}"
    ids = [await harness.submit(route, [f"user{i}@example.test"]) for i in range(20)]

    for qid in ids:
        await harness.outcome(qid)
    await asyncio.sleep(0.2)
    assert sorted(sink.recipients()) == sorted(f"user{i}@example.test" for i in range(20))
    assert await harness.outcomes_stored() == 20
    assert await harness.jobs_left() == 0


async def test_long_delivery_is_kept_alive_beyond_ack_wait(harness: Harness) -> None:
    # ack_wait below the configurable minimum, so that the test is short.
    cfg = harness.config()
    cfg = cfg.model_copy(update={"delivery": cfg.delivery.model_copy(update={"ack_wait": 2.0})})
    await harness.js.delete_consumer(DELIVERY_STREAM, DELIVERY_CONSUMER)
    await harness.js.add_consumer(DELIVERY_STREAM, delivery_consumer_config(cfg))
    slow = Recorder(delay=3.5)
    peer = Controller(slow, hostname="127.0.0.1", port=free_port())
    peer.start()
    try:
        await harness.start(cfg)
        qid = await harness.submit(f"smtp:[127.0.0.1]:{peer.port}", ["bob@example.test"])
        outcome = await harness.outcome(qid)
    finally:
        peer.stop()
    assert outcome.results[0].status == "delivered"
    assert len(slow.messages) == 1
    assert (await harness.consumer()).num_redelivered == 0


async def test_stopping_returns_a_stuck_job_to_the_queue_at_once(harness: Harness) -> None:
    async def never_greets(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        writer.close()

    server = await asyncio.start_server(never_greets, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    service = await harness.start(connect_timeout=30.0)
    await harness.submit(f"smtp:[127.0.0.1]:{port}", ["bob@example.test"])
    assert service.worker is not None
    for _ in range(100):
        if service.worker.inflight:
            break
        await asyncio.sleep(0.02)
    assert service.worker.inflight == 1

    started = time.monotonic()
    await service.stop()
    harness.services.remove(service)
    server.close()
    assert time.monotonic() - started < 3.0
    assert await harness.outcomes_stored() == 0

    # Nakked, so the next puller gets it now, not after ack_wait (5 s).
    puller = await harness.js.pull_subscribe_bind(durable=DELIVERY_CONSUMER, stream=DELIVERY_STREAM)
    [again] = await puller.fetch(1, timeout=2.0)
    assert again.metadata.num_delivered == 2
    assert time.monotonic() - started < 4.0


async def test_starttls_is_used_when_offered_without_checking_the_certificate(
    harness: Harness, tmp_path: Path
) -> None:
    recorder = Recorder()
    peer = Controller(
        recorder,
        hostname="127.0.0.1",
        port=free_port(),
        tls_context=self_signed_context(tmp_path),
        require_starttls=False,
    )
    peer.start()
    try:
        await harness.start()
        qid = await harness.submit(f"smtp:[127.0.0.1]:{peer.port}", ["bob@example.test"])
        outcome = await harness.outcome(qid)
    finally:
        peer.stop()
    assert outcome.results[0].status == "delivered"
    assert recorder.messages == [(["bob@example.test"], True)]


class BrokenTlsPeer:
    """Offers STARTTLS, then botches the handshake; speaks plain SMTP otherwise."""

    def __init__(self) -> None:
        self.connections = 0
        self.delivered: list[bytes] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        writer.write(b"220 broken.test ESMTP\r\n")
        while line := await reader.readline():
            verb = line[:4].upper()
            if verb == b"EHLO":
                writer.write(b"250-broken.test\r\n250-STARTTLS\r\n250 8BITMIME\r\n")
            elif verb == b"STAR":
                writer.write(b"220 go ahead\r\nthis is not TLS at all\r\n")
                await writer.drain()
                break
            elif verb == b"DATA":
                writer.write(b"354 go on\r\n")
                await writer.drain()
                data = b""
                while not data.endswith(b"\r\n.\r\n"):
                    data += await reader.readline()
                self.delivered.append(data)
                writer.write(b"250 2.0.0 OK\r\n")
            elif verb == b"QUIT":
                writer.write(b"221 bye\r\n")
                break
            else:
                writer.write(b"250 2.0.0 OK\r\n")
            await writer.drain()
        writer.close()


async def test_failed_tls_handshake_falls_back_to_plain_text(harness: Harness) -> None:
    peer = BrokenTlsPeer()
    server = await asyncio.start_server(peer.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        await harness.start()
        qid = await harness.submit(f"smtp:[127.0.0.1]:{port}", ["bob@example.test"])
        outcome = await harness.outcome(qid)
    finally:
        server.close()
    assert outcome.results[0].status == "delivered"
    assert peer.connections == 2
    assert len(peer.delivered) == 1
