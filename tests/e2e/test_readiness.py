"""On SIGTERM a service reports not ready at once, before and while it drains, so a
Kubernetes Service stops sending it new connections first."""

from __future__ import annotations

import os
import signal
import smtplib
import time
import urllib.error
import urllib.request
from typing import Any


def readyz(port: int) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def test_ingress_is_not_ready_while_it_drains_an_open_transaction(stack_factory: Any) -> None:
    stack = stack_factory({"ingress": {"drain_timeout": 20.0}})
    ingress = stack.processes["ingress"]
    assert readyz(ingress.http_port)[0] == 200

    client = smtplib.SMTP("127.0.0.1", stack.smtp_port, local_hostname="client.test", timeout=15)
    client.ehlo()
    client.mail("alice@client.test")
    client.rcpt("bob@local.test")
    assert ingress.proc is not None
    os.kill(ingress.proc.pid, signal.SIGTERM)

    deadline = time.monotonic() + 10
    while (answer := readyz(ingress.http_port))[0] == 200:
        assert time.monotonic() < deadline, "still ready after SIGTERM"
        time.sleep(0.05)
    assert answer[0] == 503 and "draining" in answer[1]
    # The transaction in progress is still served to its end.
    code, _ = client.data(b"Subject: late\r\n\r\nstill accepted\r\n")
    assert code == 250
    client.quit()
