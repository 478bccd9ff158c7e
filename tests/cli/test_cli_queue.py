"""``elemta queue`` and ``elemta suspend`` against running systems: the list in a fresh
``elemta run`` (what ``make run`` starts) shows a queued message, and each action of
the CLI does what it says through the API."""

from __future__ import annotations

import os
import smtplib
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from support.dnsserver import DnsServer, free_port
from support.elemta_run import Run, nats_port, write_config
from support.stack import ELEMTA

MESSAGE = "From: <alice@client.test>\r\nTo: <x@stuck.test>\r\nSubject: stuck\r\n\r\nHi.\r\n"


def elemta(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("ELEMTA_")}
    return subprocess.run(
        [ELEMTA, *args],
        env=base | {"HOME": "/nonexistent"} | env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def eventually(check: Callable[[], bool], timeout: float = 30.0, why: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, why
        time.sleep(0.2)


def send(smtp: str, rcpt: str, sender: str = "alice@client.test") -> str:
    host, port = smtp.rsplit(":", 1)
    with smtplib.SMTP(host, int(port), timeout=20) as client:
        client.ehlo("client.test")
        client.mail(sender)
        client.rcpt(rcpt)
        code, reply = client.data(MESSAGE.replace("x@stuck.test", rcpt))
    assert code == 250, reply
    return reply.decode().rsplit(" ", 1)[1]


def test_elemta_queue_list_shows_a_queued_message_in_a_fresh_elemta_run_and_the_cli_acts_on_it(
    tmp_path: Path, runs: list[Run], dns_server: DnsServer
) -> None:
    closed = free_port()  # nothing listens: the destination defers every attempt
    config, cfg = write_config(
        tmp_path,
        dns_server.port,
        {
            "server": {"trusted_networks": ["127.0.0.0/8"]},
            "transport": {
                "routes": {
                    "stuck.test": f"smtp:[127.0.0.1]:{closed}",
                    "other.test": f"smtp:[127.0.0.1]:{closed}",
                }
            },
        },
    )
    run = Run(tmp_path, "--config", str(config), "--nats-port", str(free_port()))
    runs.append(run)
    out = run.wait_for("Press Ctrl-C to stop.", timeout=120)
    nats = f"nats://127.0.0.1:{nats_port(out)}"

    boot = elemta(
        "key",
        "create",
        "--bootstrap",
        "--role",
        "admin",
        "--label",
        "me",
        env={"ELEMTA_NATS_URL": nats},
    )
    assert boot.returncode == 0, boot.stderr
    env = {
        "ELEMTA_API_URL": f"http://{cfg['api']['listen']}",
        "ELEMTA_API_KEY": boot.stdout.strip(),
    }

    smtp = cfg["ingress"]["listen"]
    qid = send(smtp, "x@stuck.test")
    other = send(smtp, "y@other.test", sender="bob@elsewhere.test")

    def listed() -> str:
        result = elemta("queue", "list", env=env)
        assert result.returncode == 0, result.stderr
        return result.stdout

    eventually(lambda: f"{qid} " in listed(), why="never deferred")  # " ": deferred
    text = listed()
    assert text.splitlines()[0].startswith("-Queue ID-")
    assert "alice@client.test" in text and "x@stuck.test" in text
    assert text.rstrip().endswith("in 2 Requests.")

    as_json = elemta("queue", "list", "--json", "--recipient", "x@stuck.test", env=env)
    assert [line.count(qid) for line in as_json.stdout.splitlines()] == [1]

    held = elemta("queue", "hold", qid, env=env)
    assert held.returncode == 0 and "held 1 of 1 message" in held.stdout
    assert f"{qid}!" in elemta("queue", "list", "--state", "held", env=env).stdout
    again = elemta("queue", "hold", qid, env=env)
    assert again.returncode == 1 and "held already" in again.stderr
    assert "released 1 of 1" in elemta("queue", "release", qid, env=env).stdout

    show = elemta("queue", "show", qid, env=env)
    assert show.returncode == 0 and "Sender:     alice@client.test" in show.stdout
    assert "hold" in show.stdout and "released" in show.stdout
    raw = elemta("queue", "show", "--raw", qid, env=env)
    assert "Subject: stuck" in raw.stdout

    summary = elemta("queue", "summary", env=env)
    assert summary.returncode == 0
    assert any(line.strip().startswith("stuck.test") for line in summary.stdout.splitlines())

    eventually(lambda: f"{qid} " in listed(), why="not deferred again")
    retry = elemta("queue", "retry", "--sender-domain", "client.test", env=env)
    assert retry.returncode == 0 and "of 1 message" in retry.stdout

    assert (
        "suspended other.test"
        in elemta(
            "suspend", "add", "other.test", "--for", "1h", "--reason", "migration", env=env
        ).stdout
    )
    assert "migration" in elemta("suspend", "list", env=env).stdout
    assert "lifted other.test" in elemta("suspend", "remove", "other.test", env=env).stdout
    assert elemta("suspend", "list", env=env).stdout == ""

    bounced = elemta("queue", "bounce", "--sender-domain", "elsewhere.test", env=env)
    assert "bounced 1 of 1 message" in bounced.stdout
    assert f"{other}#" in elemta("queue", "list", "--state", "failed", env=env).stdout
    deleted = elemta("queue", "delete", "--recipient", "x@stuck.test", env=env)
    assert "deleted 1 of 1 message" in deleted.stdout
    assert qid not in listed()
    assert "Mail queue is empty" in elemta("queue", "list", "--state", "held", env=env).stdout

    usage = elemta("queue", "delete", env=env)
    assert usage.returncode == 2 and "give queue ids" in usage.stderr
    assert run.ctrl_c(timeout=150) == 0
