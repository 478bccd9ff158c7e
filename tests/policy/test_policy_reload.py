"""The policy service as a process: reloads on SIGHUP and on a changed file without
dropping a call, refuses a bad configuration, and outlives misbehaving plugins.
The plugin it loads is the guide's example package, installed with pip."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from elemta.rpc.policy.v1 import policy_pb2 as pb
from elemta.rpc.policy.v1 import policy_pb2_grpc as pb_grpc

from support.dnsserver import DnsServer
from support.misbehaving import install
from support.natsserver import NatsServer
from support.stack import ROOT, ServiceProcess, Stack, toml_dumps

EXAMPLE = ROOT / "docs" / "plugins" / "example"
EXE = (
    b"From: a@client.test\r\nTo: b@local.test\r\nSubject: invoice\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\n'
    b"see attached\r\n--b\r\nContent-Type: application/octet-stream\r\n"
    b'Content-Disposition: attachment; filename="invoice.exe"\r\n\r\nMZ\r\n--b--\r\n'
)


@pytest.fixture(scope="module")
def example_plugin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The guide's example plugin, pip-installed into a directory of its own
    (built from a copy: setuptools writes build files beside the sources)."""
    source = tmp_path_factory.mktemp("example") / "example"
    shutil.copytree(EXAMPLE, source)
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(source),
        ],
        check=True,
        timeout=300,
    )
    return target


class Policy:
    """One policy process with its own config file, and a gRPC client."""

    def __init__(self, root: Path, nats: NatsServer, dns: DnsServer, site: list[Path]) -> None:
        self.stack = Stack(root, nats.url, dns.port)
        self.stack.config["policy"]["reload_check_interval"] = 0.2
        self.stack.config["policy"]["plugin_dirs"] = [str(p) for p in site]
        self.stack.write_config()
        self.proc: ServiceProcess = self.stack.service("policy")

    def configure(self, **policy: Any) -> None:
        """A new file swapped in at once, as a ConfigMap update swaps its target."""
        self.stack.config["policy"].update(policy)
        new = self.stack.config_path.with_suffix(".new")
        new.write_text(toml_dumps(self.stack.config))
        os.replace(new, self.stack.config_path)

    def start(self) -> Policy:
        self.proc.start()
        self.proc.wait_ready()
        return self

    def hup(self) -> None:
        assert self.proc.proc is not None
        self.proc.proc.send_signal(signal.SIGHUP)

    async def check(self, message: bytes) -> pb.Verdict:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{self.stack.policy_port}") as channel:
            stub = pb_grpc.PolicyServiceStub(channel)
            request = pb.CheckDataRequest(
                session=pb.Session(client_ip="127.0.0.1", helo="client.test"),
                sender="a@client.test",
                recipients=["b@local.test"],
                message=message,
            )
            response = await stub.CheckData(request, timeout=20.0)
            return response.verdict

    def wait_log(self, text: str, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        while text not in (log := self.proc.log()):
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} not in the policy log:\n{log}")
            time.sleep(0.1)
        return log


@pytest.fixture
def policy(
    tmp_path: Path, nats_server: NatsServer, dns_server: DnsServer, example_plugin: Path
) -> Iterator[Policy]:
    p = Policy(tmp_path / "policy", nats_server, dns_server, [example_plugin, install(tmp_path)])
    yield p
    p.proc.stop()


async def test_sighup_with_a_new_plugin_list_takes_effect_without_dropping_a_call(
    policy: Policy,
) -> None:
    policy.start()
    answers: list[int] = []
    errors: list[BaseException] = []
    stop = asyncio.Event()
    answered = asyncio.Condition()

    async def keep_asking() -> None:
        while not stop.is_set():
            try:
                answers.append((await policy.check(EXE)).smtp_code)
            except grpc.aio.AioRpcError as exc:
                errors.append(exc)
            async with answered:
                answered.notify_all()

    async def until(done: Any) -> None:
        async with answered:
            await asyncio.wait_for(answered.wait_for(done), 30)

    callers = [asyncio.create_task(keep_asking()) for _ in range(4)]
    await until(lambda: len(answers) >= 8)
    policy.configure(reload_check_interval=0.0, plugins=[{"name": "attachments"}])
    policy.hup()
    await until(lambda: 552 in answers)
    settled = len(answers)
    await until(lambda: len(answers) >= settled + 8)
    stop.set()
    await asyncio.gather(*callers)
    assert not errors  # not one call dropped
    first = answers.index(552)
    assert set(answers[:first]) == {0} and answers[first:].count(0) <= len(callers)
    assert set(answers[-4:]) == {552}
    assert "reloaded (SIGHUP): plugins: attachments; milters: none" in policy.proc.log()
    refused = await policy.check(EXE)
    assert (refused.smtp_code, refused.enhanced_code) == (552, "5.7.0")
    assert refused.reason == "Attachment type not accepted: invoice.exe"


async def test_a_bad_file_is_refused_and_a_good_change_is_picked_up_without_a_signal(
    policy: Policy,
) -> None:
    policy.configure(plugins=[{"name": "attachments"}])
    policy.start()
    assert (await policy.check(EXE)).smtp_code == 552
    policy.configure(plugins=[{"name": "attachments", "options": {"extensionz": [".exe"]}}])
    policy.wait_log("plugin attachments: option 'extensionz'")
    assert "refused, the running configuration stays" in policy.proc.log()
    assert (await policy.check(EXE)).smtp_code == 552  # the running one stayed
    policy.configure(plugins=[{"name": "attachments", "options": {"action": "hold"}}])
    policy.wait_log("changed): plugins: attachments")
    held = await policy.check(EXE)
    assert (held.action, held.smtp_code) == (pb.ACTION_HOLD, 0)


async def test_misbehaving_isolated_plugins_leave_the_service_answering_within_timeouts(
    policy: Policy,
) -> None:
    plugin = {"name": "misbehaving", "isolation": "process", "timeout": 3.0, "workers": 3}
    policy.configure(plugins=[plugin])
    policy.start()

    def bad(how: str) -> bytes:
        return f"From: a@x\r\nX-Misbehave: {how}\r\n\r\nhi\r\n".encode()

    async def timed(how: str) -> tuple[float, pb.Verdict]:
        started = time.monotonic()
        verdict = await policy.check(bad(how))
        return time.monotonic() - started, verdict

    slow = [asyncio.create_task(timed(how)) for how in ("hang", "allocate", "raise")]
    # While a plugin hangs, the service itself answers at once.
    started = time.monotonic()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{policy.stack.policy_port}") as channel:
        stub = pb_grpc.PolicyServiceStub(channel)
        session = pb.Session(client_ip="127.0.0.1", helo="client.test")
        await stub.CheckConnect(pb.CheckConnectRequest(session=session), timeout=5)
    assert time.monotonic() - started < 2.0
    for took, verdict in await asyncio.gather(*slow):
        assert verdict.action == pb.ACTION_ACCEPT  # failed open
        assert took < 3.0 + 5.0  # within the plugin's timeout, and a margin
    assert policy.proc.ready()
    fine = await policy.check(bad("fine"))  # the workers that died were replaced
    assert fine.add_headers[0].name == "X-Worker-Pid"
