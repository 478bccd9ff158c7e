"""Priorities through real processes: with a backlog, high-priority mail goes first
and low-priority mail still moves; MT-PRIORITY counts only from trusted clients."""

from __future__ import annotations

import asyncio
import smtplib
import threading
import time

import nats

from support.dsnsink import DsnSink
from support.mua import PASSWORD, add_user, plain, tls_client
from support.smtpsink import SmtpSink

MESSAGE = "From: {sender}\r\nSubject: {rcpt}\r\n\r\nHello.\r\n"
HIGH, LOW = "alerts@local.test", "bulk@local.test"


def _config(sink: SmtpSink, concurrency: int = 4) -> dict[str, dict[str, object]]:
    return {
        "transport": {"routes": {"remote.test": f"smtp:[127.0.0.1]:{sink.port}"}},
        "delivery": {"concurrency": concurrency},
        "priorities": {
            "enabled": True,
            "senders": {HIGH: 5, LOW: -5},
            "low_share": 0.25,  # one slot of four
        },
    }


def _send(stack, sender: str, prefix: str, count: int, start: int = 0) -> None:  # type: ignore[no-untyped-def]
    """``count`` messages from ``sender``, one per recipient ``<prefix><n>@remote.test``."""
    with stack.smtp() as s:
        s.ehlo()
        for n in range(start, start + count):
            rcpt = f"{prefix}{n}@remote.test"
            s.sendmail(sender, [rcpt], MESSAGE.format(sender=sender, rcpt=rcpt))


def _order(sink: SmtpSink) -> list[str]:
    """``h`` or ``l`` for each delivered message, in the order the sink took them."""
    return [r[0] for r in sink.recipients()]


def _wait(sink: SmtpSink, count: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while len(sink.recipients()) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"sink has {len(sink.recipients())} of {count}")
        time.sleep(0.02)


def _jobs_waiting(nats_url: str, count: int, timeout: float = 30.0) -> None:
    """Until ELEMTA_DELIVERY holds ``count`` jobs."""

    async def go() -> None:
        nc = await nats.connect(nats_url)
        try:
            js = nc.jetstream()
            deadline = time.monotonic() + timeout
            while (await js.stream_info("ELEMTA_DELIVERY")).state.messages < count:
                if time.monotonic() > deadline:
                    raise AssertionError(f"fewer than {count} jobs in ELEMTA_DELIVERY")
                await asyncio.sleep(0.1)
        finally:
            await nc.close()

    asyncio.run(go())


def test_with_a_backlog_high_priority_mail_is_delivered_first_and_low_still_moves(
    stack_factory, make_sink
):
    sink: SmtpSink = make_sink()
    sink.delay = 0.05
    stack = stack_factory(_config(sink), start=False)
    stack.start("policy", "queue", "ingress")
    # the low-priority mail is older: in arrival order it would go first
    _send(stack, LOW, "l", 20)
    _send(stack, HIGH, "h", 20)
    stack.start("delivery")
    _wait(sink, 40)
    order = _order(sink)
    last_high = max(i for i, c in enumerate(order) if c == "h")
    # three slots of four for high mail while it waits, one kept for low mail
    assert order[:20].count("h") >= 13, "".join(order)
    assert last_high < 32, "".join(order)
    assert "l" in order[:last_high], order  # low mail moved meanwhile


def test_low_priority_mail_moves_while_high_priority_mail_keeps_arriving(stack_factory, make_sink):
    sink: SmtpSink = make_sink()
    sink.delay = 0.05
    stack = stack_factory(_config(sink), start=False)
    stack.start("policy", "queue", "ingress")
    _send(stack, LOW, "l", 8)
    _send(stack, HIGH, "h", 40)
    stack.start("delivery")
    stop = threading.Event()
    sent = [40]

    def keep_sending() -> None:
        while not stop.is_set():
            _send(stack, HIGH, "h", 10, start=sent[0])
            sent[0] += 10

    sender = threading.Thread(target=keep_sending, daemon=True)
    sender.start()
    try:
        deadline = time.monotonic() + 60
        while _order(sink).count("l") < 8:
            assert time.monotonic() < deadline, _order(sink)
            time.sleep(0.02)
        high_delivered = _order(sink).count("h")
        high_sent = sent[0]
    finally:
        stop.set()
        sender.join(30)
    # every low message went out while high mail was still waiting
    assert high_delivered < high_sent - 5, (high_delivered, high_sent)


def test_retries_from_the_job_queue_go_in_priority_order_too(stack_factory, make_sink, nats_server):
    sink: SmtpSink = make_sink()
    sink.delay = 0.05
    for n in range(12):  # every first attempt is deferred once
        sink.rcpt_replies[f"l{n}@remote.test"] = ["451 4.3.0 try later"]
        sink.rcpt_replies[f"h{n}@remote.test"] = ["451 4.3.0 try later"]
    stack = stack_factory(_config(sink))
    _send(stack, LOW, "l", 12)
    _send(stack, HIGH, "h", 12)
    deadline = time.monotonic() + 30
    while len(sink.rcpt_log) < 24:
        assert time.monotonic() < deadline, sink.rcpt_log
        time.sleep(0.02)
    stack.processes["delivery"].stop()
    _jobs_waiting(nats_server.url, 24)  # the retries, due after 1 s, wait for delivery
    stack.start("delivery")
    _wait(sink, 24)
    order = _order(sink)
    assert order[:12].count("h") >= 8, order
    assert "l" in order[: max(i for i, c in enumerate(order) if c == "h")], order


def test_mt_priority_orders_mail_from_a_trusted_client_but_not_from_others(
    stack_factory, make_sink
):
    sink: SmtpSink = make_sink()
    sink.delay = 0.05
    config = _config(sink)
    config["priorities"] = {"enabled": True, "low_share": 0.25}
    stack = stack_factory(config, start=False)
    stack.start("policy", "queue", "ingress")
    with stack.smtp() as s:
        s.ehlo()
        assert s.has_extn("mt-priority")
        for n in range(12):
            rcpt = f"l{n}@remote.test"
            s.sendmail("a@local.test", [rcpt], MESSAGE.format(sender="a", rcpt=rcpt))
        for n in range(12):
            rcpt = f"h{n}@remote.test"
            body = MESSAGE.format(sender="a", rcpt=rcpt)
            s.sendmail("a@local.test", [rcpt], body, mail_options=["MT-PRIORITY=6"])
    stack.start("delivery")
    _wait(sink, 24)
    order = _order(sink)
    assert order[:12].count("h") >= 8, order


def test_mt_priority_of_an_authenticated_client_goes_on_and_an_untrusted_ones_does_not(
    stack_factory,
):
    sink = DsnSink(mt_priority=True).start()
    try:
        stack = stack_factory(
            {
                # loopback is not trusted here: only a login makes MT-PRIORITY count
                "server": {"trusted_networks": ["192.0.2.0/24"], "relay_domains": ["partner.test"]},
                "ingress": {"auth_failure_delay": 0.0},
                "transport": {
                    "routes": {
                        "remote.test": f"smtp:[127.0.0.1]:{sink.port}",
                        "partner.test": f"smtp:[127.0.0.1]:{sink.port}",
                    }
                },
                "priorities": {"enabled": True},
            }
        )
        add_user(stack, "alice@local.test")
        with smtplib.SMTP_SSL(
            "127.0.0.1", stack.submissions_port, local_hostname="mua.test", timeout=20,
            context=tls_client(),
        ) as s:  # fmt: skip
            s.ehlo()
            assert s.has_extn("mt-priority")
            assert s.docmd("AUTH", "PLAIN " + plain("alice@local.test", PASSWORD))[0] == 235
            body = MESSAGE.format(sender="alice@local.test", rcpt="dan@remote.test")
            s.sendmail("alice@local.test", ["dan@remote.test"], body, ["MT-PRIORITY=7"])
        sink.wait_for(1)
        with stack.smtp() as s:  # port 25, no login, not trusted
            s.ehlo()
            assert s.has_extn("mt-priority")
            body = MESSAGE.format(sender="eve@client.test", rcpt="pat@partner.test")
            s.sendmail("eve@client.test", ["pat@partner.test"], body, ["MT-PRIORITY=7"])
        sink.wait_for(2)
    finally:
        sink.stop()
    by_rcpt = dict(zip(sink.recipients(), sink.mail_params, strict=True))
    assert by_rcpt == {"dan@remote.test": ["MT-PRIORITY=7"], "pat@partner.test": []}
