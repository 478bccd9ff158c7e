"""Fixtures: a real nats-server, a real DNS server, aiosmtpd sinks, the whole stack."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from support.dnsserver import DnsServer  # noqa: E402
from support.natsserver import NatsServer  # noqa: E402
from support.rspamd import RspamdServer  # noqa: E402
from support.smtpsink import SmtpSink  # noqa: E402
from support.stack import Stack  # noqa: E402


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path / "nats")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def dns_server() -> Iterator[DnsServer]:
    server = DnsServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def rspamd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RspamdServer]:
    """One rspamd for the whole run: it takes seconds to load its rules."""
    server = RspamdServer(tmp_path_factory.mktemp("rspamd")).start()
    yield server
    server.stop()


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    s = SmtpSink().start()
    yield s
    s.stop()


@pytest.fixture
def make_sink() -> Iterator[object]:
    sinks: list[SmtpSink] = []

    def make(lmtp: bool = False) -> SmtpSink:
        s = SmtpSink(lmtp=lmtp).start()
        sinks.append(s)
        return s

    yield make
    for s in sinks:
        s.stop()


@pytest.fixture
def stack_factory(
    tmp_path: Path, nats_server: NatsServer, dns_server: DnsServer
) -> Iterator[object]:
    stacks: list[Stack] = []

    def make(overrides: dict[str, dict[str, object]] | None = None, start: bool = True) -> Stack:
        st = Stack(tmp_path / f"stack{len(stacks)}", nats_server.url, dns_server.port, overrides)
        stacks.append(st)
        if start:
            st.start()
        return st

    yield make
    for st in stacks:
        st.stop()
