"""A service process as the launcher sees it: ready once its /readyz says so."""

from __future__ import annotations

import socket
from pathlib import Path

from elemta.launcher.processes import Child


def test_a_port_that_answers_no_http_is_not_ready_and_the_launcher_goes_on(
    tmp_path: Path, echo_port: int
) -> None:
    child = Child(
        "queue", "queue", ["true"], tmp_path / "queue.log", health=f"127.0.0.1:{echo_port}"
    )
    assert child.check_ready() is False  # not an exception that stops `elemta run`
    assert child.ready is False


def test_a_port_nothing_listens_on_is_not_ready(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    child = Child("queue", "queue", ["true"], tmp_path / "queue.log", health=f"127.0.0.1:{port}")
    assert child.check_ready() is False
