"""Fixtures of the delivery tests; see :mod:`delivery_harness`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.lmtp import LMTP
from delivery_harness import Harness

from support.dnsserver import DnsServer
from support.natsserver import NatsServer
from support.smtpsink import SmtpSink


@pytest.fixture
def lmtp_sink() -> Iterator[SmtpSink]:
    """An LMTP sink. ``make_sink(lmtp=True)`` cannot start one with aiosmtpd 1.4
    (its Controller takes no ``factory`` argument), so the LMTP server comes from
    a Controller subclass, as aiosmtpd documents, around the sink's own handler."""
    sink = SmtpSink()
    handler = sink.controller.handler

    class LmtpController(Controller):
        def factory(self) -> LMTP:
            return LMTP(handler, hostname="sink.test", enable_SMTPUTF8=True)

    sink.controller = LmtpController(handler, hostname="127.0.0.1", port=sink.port)
    sink.start()
    yield sink
    sink.stop()


@pytest.fixture
async def harness(
    nats_server: NatsServer, dns_server: DnsServer, tmp_path: Path
) -> AsyncIterator[Harness]:
    h = Harness(nats_server.url, dns_server.port, tmp_path)
    await h.setup()
    yield h
    await h.close()
