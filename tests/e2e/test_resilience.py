"""Nothing accepted is lost: NATS outages, killed workers, several workers."""

from __future__ import annotations

import re
import smtplib
import time

from support.smtpsink import SmtpSink

MESSAGE = "From: a@client.test\r\nTo: r@relay.test\r\nSubject: n{n}\r\n\r\nmessage {n}\r\n"


def _relay_stack(stack_factory, sink: SmtpSink, **extra):  # type: ignore[no-untyped-def]
    overrides = {"transport": {"routes": {"relay.test": f"smtp:[127.0.0.1]:{sink.port}"}}}
    overrides.update(extra)
    return stack_factory(overrides)


def _delivered_subjects(sink: SmtpSink) -> list[str]:
    out = []
    for m in sink.messages:
        found = re.search(rb"^Subject: (n\d+)\r$", m.content, re.M)
        if found:
            out.append(found.group(1).decode())
    return out


def test_a_nats_outage_answers_451_and_loses_nothing(stack_factory, make_sink, nats_server):
    sink: SmtpSink = make_sink()
    stack = _relay_stack(stack_factory, sink)
    accepted = []
    for n in range(5):
        assert stack.send("a@client.test", ["r@relay.test"], MESSAGE.format(n=n))[0] == 250
        accepted.append(f"n{n}")
    nats_server.stop()
    with stack.smtp() as s:
        s.ehlo()
        s.mail("a@client.test")
        s.rcpt("r@relay.test")
        started = time.monotonic()
        # The refusal may come at the DATA command (queue known to be down) or
        # after the message (the store failed); either way it is 451 4.3.0.
        code, text = s.docmd("DATA")
        if code == 354:
            s.send(MESSAGE.format(n=99).encode() + b".\r\n")
            code, text = s.getreply()
        assert code == 451 and text.startswith(b"4.3.0"), (code, text)
        assert time.monotonic() - started < 10
    nats_server.start()
    # once NATS is back, new mail is accepted again and everything accepted arrives
    deadline = time.monotonic() + 30
    while True:
        try:
            code, _ = stack.send("a@client.test", ["r@relay.test"], MESSAGE.format(n=5))
        except smtplib.SMTPException:
            code = 0
        if code == 250:
            accepted.append("n5")
            break
        assert time.monotonic() < deadline, "ingress did not recover after NATS returned"
        time.sleep(0.5)
    sink.wait_for(len(accepted), timeout=40)
    time.sleep(1)
    got = _delivered_subjects(sink)
    assert sorted(set(got)) == sorted(accepted)
    assert "n99" not in got


def test_killing_a_delivery_process_mid_run_loses_no_message(stack_factory, make_sink):
    sink: SmtpSink = make_sink()
    sink.delay = 0.1  # slow enough that jobs are in flight when the worker dies
    stack = _relay_stack(stack_factory, sink, delivery={"ack_wait": 5.0, "concurrency": 20})
    total = 120
    with stack.smtp() as s:
        for n in range(total):
            s.sendmail("a@client.test", ["r@relay.test"], MESSAGE.format(n=n))
    # kill -9 while work is in flight, then start a fresh worker
    deadline = time.monotonic() + 20
    while len(sink.messages) < 10 and time.monotonic() < deadline:
        time.sleep(0.02)
    stack.processes["delivery"].kill()
    stack.processes["delivery"].start()
    stack.processes["delivery"].wait_ready()
    sink.wait_for(total, timeout=60)
    time.sleep(1.0)
    got = _delivered_subjects(sink)
    missing = {f"n{n}" for n in range(total)} - set(got)
    duplicates = len(got) - len(set(got))
    print(
        f"\nkill -9 of a delivery process: {total} accepted, {len(set(got))} delivered, "
        f"{duplicates} duplicates"
    )
    assert not missing


def test_two_delivery_processes_share_the_work(stack_factory, make_sink):
    sink: SmtpSink = make_sink()
    stack = _relay_stack(stack_factory, sink, delivery={"concurrency": 4})
    second = stack.add_delivery()
    total = 80
    with stack.smtp() as s:
        for n in range(total):
            s.sendmail("a@client.test", ["r@relay.test"], MESSAGE.format(n=n))
    sink.wait_for(total, timeout=60)

    def attempts(metrics: str) -> float:
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in metrics.splitlines()
            if line.startswith("elemta_delivery_attempts_total{")
        )

    first_count = attempts(stack.processes["delivery"].metrics())
    second_count = attempts(second.metrics())
    assert first_count > 0 and second_count > 0, (first_count, second_count)
    assert first_count + second_count >= total
