"""Fixtures, defined once for the whole suite: a real nats-server, a real DNS server,
aiosmtpd sinks, the whole stack, and a clock the test moves by hand."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

# ``support`` is importable because pytest puts this folder (tests/, the first
# without an __init__.py) on sys.path for this conftest; Elemta itself is the
# installed package (make install), never found through a path.
from support.clock import FakeClock
from support.dnsserver import DnsServer
from support.elemta_run import Run
from support.natsserver import NatsServer
from support.rspamd import RspamdServer
from support.smtpsink import SmtpSink
from support.stack import Stack


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path / "nats")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def clock() -> FakeClock:
    """Starts at the real time (stored records carry real timestamps) and stands still."""
    return FakeClock()


@pytest.fixture(scope="module")
def shared_dns() -> Iterator[DnsServer]:
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
def dns_server(shared_dns: DnsServer) -> DnsServer:
    """A real DNS server on loopback, empty for each test: one per module, because
    stopping one takes a second."""
    shared_dns.clear()
    shared_dns.queries = 0
    return shared_dns


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


@pytest.fixture
def runs() -> Iterator[list[Run]]:
    """``elemta run`` processes a test starts; stopped (or killed) at its end."""
    started: list[Run] = []
    yield started
    for run in started:
        run.kill()
