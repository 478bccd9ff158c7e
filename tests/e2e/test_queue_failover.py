"""Two queue processes: the standby takes over within ``queue.lease_time`` when the
active one is killed, rebuilds the retry schedule from the stream, and no message
is handled twice."""

from __future__ import annotations

import re
import time

from support.smtpsink import SmtpSink
from support.stack import ServiceProcess

LEASE_TIME = 4.0
MESSAGE = "From: a@client.test\r\nTo: {rcpt}\r\nSubject: {s}\r\n\r\nmessage {s}\r\n"


def _gauge(proc: ServiceProcess, name: str) -> float | None:
    try:
        found = re.search(rf"^{name} (\S+)$", proc.metrics(), re.M)
    except OSError:
        return None
    return float(found.group(1)) if found else None


def _active(proc: ServiceProcess) -> float | None:
    return _gauge(proc, "elemta_queue_active")


def _subjects(sink: SmtpSink) -> list[str]:
    return [
        m.content.split(b"Subject: ", 1)[1].split(b"\r\n", 1)[0].decode() for m in sink.messages
    ]


def test_the_standby_queue_takes_over_within_its_lease_time_when_the_active_one_is_killed(
    stack_factory, make_sink
):  # type: ignore[no-untyped-def]
    sink: SmtpSink = make_sink()
    stack = stack_factory(
        {
            "transport": {"routes": {"relay.test": f"smtp:[127.0.0.1]:{sink.port}"}},
            "queue": {"lease_time": LEASE_TIME, "retry_schedule": [3.0], "retry_jitter": 0.0},
        }
    )
    first = stack.processes["queue"]
    second = stack.add_queue()
    assert _active(first) == 1.0 and _active(second) == 0.0

    for n in range(5):
        assert (
            stack.send("a@client.test", ["r@relay.test"], MESSAGE.format(rcpt="r", s=f"n{n}"))[0]
            == 250
        )
    # one message is refused once by the destination: it waits in ELEMTA_DEFERRED
    sink.rcpt_replies["later@relay.test"] = ["451 4.3.0 busy"]
    assert (
        stack.send("a@client.test", ["later@relay.test"], MESSAGE.format(rcpt="later", s="later"))[
            0
        ]
        == 250
    )
    sink.wait_for(5, timeout=60)
    deadline = time.monotonic() + 30
    while _gauge(first, "elemta_queue_deferred_messages") != 1.0:
        assert time.monotonic() < deadline, first.log()
        time.sleep(0.05)

    first.kill()  # kill -9: no release, the lease has to expire
    killed = time.monotonic()
    # ingress keeps accepting meanwhile: the messages wait in ELEMTA_MESSAGES
    for n in range(5, 10):
        assert (
            stack.send("a@client.test", ["r@relay.test"], MESSAGE.format(rcpt="r", s=f"n{n}"))[0]
            == 250
        )
    while _active(second) != 1.0:
        assert time.monotonic() - killed < LEASE_TIME + 5, second.log()
        time.sleep(0.05)
    took = time.monotonic() - killed
    print(f"\nstandby active {took:.2f} s after kill -9 of the active queue (lease {LEASE_TIME} s)")
    assert took <= LEASE_TIME, second.log()
    assert "took over the lease" in second.log()

    got = sink.wait_for(11, timeout=60)
    time.sleep(1.0)  # room for a copy that should not come
    subjects = sorted(_subjects(sink))
    assert subjects == sorted([f"n{n}" for n in range(10)] + ["later"]), subjects
    assert len(got) == len(sink.messages)
