"""Fixtures of the ingress tests: one real nats-server and one real policy service
shared by the session, and in-process ingress services built per test."""

from __future__ import annotations

import smtplib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from ingress_harness import IngressRunner, create_streams, make_config

from support.dnsserver import free_port
from support.natsserver import NatsServer
from support.stack import Stack


@pytest.fixture(scope="session")
def shared_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path_factory.mktemp("ingress-nats"))
    server.start()
    create_streams(server.url, make_config(Path("/nonexistent"), server.url, "127.0.0.1:1"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def policy_address(
    tmp_path_factory: pytest.TempPathFactory, shared_nats: NatsServer
) -> Iterator[str]:
    """The real policy service, as a subprocess (it answers ACCEPT)."""
    stack = Stack(tmp_path_factory.mktemp("ingress-policy"), shared_nats.url, free_port())
    stack.start("policy")
    yield f"127.0.0.1:{stack.policy_port}"
    stack.stop()


IngressFactory = Callable[..., IngressRunner]


@pytest.fixture
def ingress_factory(
    tmp_path: Path, shared_nats: NatsServer, policy_address: str
) -> Iterator[IngressFactory]:
    runners: list[IngressRunner] = []

    def make(
        overrides: dict[str, Any] | None = None,
        nats_url: str | None = None,
        policy: str | None = None,
        start: bool = True,
        wait_stream: bool = True,
    ) -> IngressRunner:
        cfg = make_config(
            tmp_path / f"ingress{len(runners)}",
            nats_url or shared_nats.url,
            policy or policy_address,
            overrides,
        )
        runner = IngressRunner(cfg)
        runners.append(runner)
        if start:
            runner.start(wait_stream=wait_stream)
        return runner

    yield make
    for runner in runners:
        runner.stop()


@pytest.fixture
def ingress(ingress_factory: IngressFactory) -> IngressRunner:
    return ingress_factory()


@pytest.fixture
def smtp() -> Iterator[Callable[[IngressRunner], smtplib.SMTP]]:
    clients: list[smtplib.SMTP] = []

    def connect(runner: IngressRunner) -> smtplib.SMTP:
        client = smtplib.SMTP("127.0.0.1", runner.port, local_hostname="client.test", timeout=15)
        clients.append(client)
        return client

    yield connect
    for client in clients:
        try:
            client.close()
        except OSError:
            pass
