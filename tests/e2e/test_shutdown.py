"""SIGTERM always stops a service within its drain timeout, NATS or no NATS."""

from __future__ import annotations

import signal
import time
from typing import Any

import pytest

from support.dnsserver import free_port
from support.natsserver import NatsServer
from support.stack import ServiceProcess

DRAIN = 4.0
SLACK = 4.0  # the interpreter's own exit, on a busy machine

OVERRIDES: dict[str, dict[str, Any]] = {
    "queue": {"drain_timeout": DRAIN},
    "delivery": {"drain_timeout": DRAIN},
}


def stop_timed(proc: ServiceProcess) -> tuple[int | None, float]:
    started = time.monotonic()
    code = proc.stop(signal.SIGTERM, timeout=60)
    return code, time.monotonic() - started


def test_queue_and_delivery_exit_on_sigterm_within_the_drain_timeout_while_nats_is_down(
    stack_factory: Any, nats_server: NatsServer
) -> None:
    stack = stack_factory(OVERRIDES, start=False)
    stack.start("queue", "delivery")
    queue, delivery = stack.processes["queue"], stack.processes["delivery"]
    nats_server.stop()
    time.sleep(1.0)  # let both notice: their clients now retry the connection
    for proc in (queue, delivery):
        code, took = stop_timed(proc)
        assert code == 0, proc.log()
        assert took < DRAIN + SLACK, f"{proc.name} took {took:.1f}s:\n{proc.log()}"


@pytest.mark.parametrize("service", ["queue", "delivery"])
def test_a_service_still_waiting_for_nats_stops_on_sigterm(
    stack_factory: Any, service: str
) -> None:
    stack = stack_factory(
        {**OVERRIDES, "nats": {"url": f"nats://127.0.0.1:{free_port()}"}}, start=False
    )
    stack.write_config()
    proc = stack.service(service)
    proc.start()
    deadline = time.monotonic() + 30
    while "cannot reach NATS" not in proc.log():  # it is in its connection loop
        assert proc.proc is not None and proc.proc.poll() is None, proc.log()
        assert time.monotonic() < deadline, proc.log()
        time.sleep(0.1)
    code, took = stop_timed(proc)
    assert code == 0, proc.log()
    assert took < DRAIN + SLACK, proc.log()
