"""``elemta run`` as a supervisor: what stops on its own is started again, with
back-off, and logged; ingress answers ``451`` meanwhile; only a signal to the
launcher stops the system."""

from __future__ import annotations

import os
import signal
import smtplib
import sys
import time
from pathlib import Path

from elemta.launcher.processes import Child
from elemta.launcher.restart import Backoff, Restarter

from support.dnsserver import DnsServer, free_port
from support.elemta_run import Run, assert_all_stopped, write_config
from support.smtpsink import SmtpSink

MESSAGE = "From: a@client.test\r\nTo: r@relay.test\r\nSubject: {s}\r\n\r\nbody\r\n"


def test_the_pause_before_a_restart_doubles_while_a_service_keeps_failing() -> None:
    backoff = Backoff(first=1.0, cap=8.0)
    assert [backoff.delay(n) for n in range(1, 7)] == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]


def test_a_child_that_exits_is_logged_with_its_log_tail_and_started_again_later(
    tmp_path: Path,
) -> None:
    now = [time.monotonic()]
    said: list[str] = []
    restarter = Restarter(Backoff(first=1.0, cap=60.0), clock=lambda: now[0], say=said.append)
    child = Child(
        "crashy",
        "crashy",
        [sys.executable, "-c", "import sys; print('cannot open the widget'); sys.exit(3)"],
        tmp_path / "crashy.log",
        pid_file=tmp_path / "run" / "crashy.pid",
    )
    child.start()
    assert child.pid_file is not None and child.pid_file.read_text().strip().isdigit()
    assert child.proc is not None
    child.proc.wait()

    restarter.poll([child])
    assert "crashy (pid" in said[-1] and "exited with status 3" in said[-1]
    assert "restarting in 1 s" in said[-1]
    assert "cannot open the widget" in said[-1]  # the end of its own log
    assert not child.pid_file.exists()

    now[0] += 0.5
    restarter.poll([child])
    assert child.proc is None  # not yet
    now[0] += 0.6
    restarter.poll([child])
    assert said[-1].startswith("crashy restarted (pid")
    assert child.proc is not None
    child.proc.wait()

    restarter.poll([child])  # failed again at once: a longer pause
    assert "restarting in 2 s" in said[-1]
    assert restarter.restarts == 1


def _send(port: int, subject: str) -> tuple[int, bytes]:
    with smtplib.SMTP("127.0.0.1", port, local_hostname="client.test", timeout=30) as s:
        s.ehlo()
        s.mail("a@client.test")
        s.rcpt("r@relay.test")
        code, text = s.docmd("DATA")
        if code == 354:
            s.send(MESSAGE.format(s=subject).encode() + b".\r\n")
            code, text = s.getreply()
        return code, text


def _pid(tmp_path: Path, name: str) -> int:
    return int((tmp_path / "var" / "run" / f"{name}.pid").read_text())


def test_a_killed_service_is_restarted_and_ingress_answers_451_meanwhile(
    tmp_path: Path, runs: list[Run], dns_server: DnsServer, sink: SmtpSink
) -> None:
    config, cfg = write_config(
        tmp_path,
        dns_server.port,
        {
            "server": {"trusted_networks": ["127.0.0.0/8"]},
            "transport": {"routes": {"relay.test": f"smtp:[127.0.0.1]:{sink.port}"}},
        },
    )
    run = Run(
        tmp_path,
        "--config",
        str(config),
        "--nats-port",
        str(free_port()),
        "--only",
        "policy,queue,delivery,ingress",
        "--delivery",
        "1",
        "--restart-delay",
        "3",
    )
    runs.append(run)
    run.wait_for("Press Ctrl-C to stop.", timeout=120)
    smtp = int(cfg["ingress"]["listen"].rsplit(":", 1)[1])
    assert _send(smtp, "before")[0] == 250
    sink.wait_for(1, timeout=60)

    # nats-server killed: the launcher says so, and until it is back ingress
    # answers 451 4.3.0 (the client keeps the message), never a refused connection
    nats_pid = _pid(tmp_path, "nats-server")
    os.kill(nats_pid, signal.SIGKILL)
    run.wait_for(f"nats-server (pid {nats_pid}) killed by signal 9 (SIGKILL)")
    assert "restarting in 3 s" in run.output
    code, text = _send(smtp, "refused")
    assert code == 451 and text.startswith(b"4.3.0"), (code, text)
    run.wait_for("nats-server restarted (pid")
    run.wait_for("nats-server is ready again")
    assert _pid(tmp_path, "nats-server") != nats_pid

    # a client retrying gets its message accepted once the services reconnected
    deadline = time.monotonic() + 60
    while (code := _send(smtp, "after")[0]) != 250:
        assert code == 451 and time.monotonic() < deadline, code
        time.sleep(0.5)

    # a service killed is restarted too, and is ready again
    policy_pid = _pid(tmp_path, "policy")
    os.kill(policy_pid, signal.SIGKILL)
    run.wait_for(f"policy (pid {policy_pid}) killed by signal 9 (SIGKILL)")
    run.wait_for("policy is ready again", timeout=120)

    sink.wait_for(2)
    time.sleep(0.5)  # room for a copy that should not come
    subjects = [m.content.split(b"Subject: ", 1)[1].split(b"\r\n", 1)[0] for m in sink.messages]
    assert sorted(subjects) == [b"after", b"before"]

    # only a signal to the launcher stops everything
    assert run.ctrl_c(timeout=150) == 0, run.output
    assert_all_stopped(tmp_path, smtp)
    assert not (tmp_path / "var" / "run" / "elemta.pid").exists()
