"""Traffic shaping per destination across two delivery processes, through real processes."""

from __future__ import annotations

import time

from support.shapingsink import ShapingSink, most_in_any_second
from support.smtpsink import SmtpSink

MESSAGE = "From: bob@local.test\r\nSubject: shaped {n}\r\n\r\nHello {n}.\r\n"


def _send_many(stack, recipients: list[str]) -> None:  # type: ignore[no-untyped-def]
    """One message per recipient, over one SMTP session."""
    with stack.smtp() as s:
        s.ehlo()
        for n, rcpt in enumerate(recipients):
            s.sendmail("bob@local.test", [rcpt], MESSAGE.format(n=n))


def _wait(sink: SmtpSink, count: int, timeout: float) -> float:
    """Wait until ``sink`` holds ``count`` messages; the monotonic time it did."""
    deadline = time.monotonic() + timeout
    while len(sink.messages) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"sink has {len(sink.messages)} of {count} messages")
        time.sleep(0.02)
    return time.monotonic()


def test_two_delivery_processes_keep_a_destination_to_2_connections_and_5_messages_a_second(
    stack_factory, make_sink
):
    limited = ShapingSink().start()
    free: SmtpSink = make_sink()
    try:
        stack = stack_factory(
            {
                "transport": {
                    "routes": {
                        "limited.test": f"smtp:[127.0.0.1]:{limited.port}",
                        "free.test": f"smtp:[127.0.0.1]:{free.port}",
                    }
                },
                "ingress": {"max_recipients": 100},
                "delivery": {"concurrency": 16},
                "shaping": {
                    "destinations": {
                        f"[127.0.0.1]:{limited.port}": {
                            "max_connections": 2,
                            "max_message_rate": 5.0,
                        }
                    }
                },
            }
        )
        stack.add_delivery()  # a second delivery process sharing the limits
        _send_many(stack, [f"u{n}@limited.test" for n in range(25)])
        started = time.monotonic()
        _send_many(stack, [f"u{n}@free.test" for n in range(25)])
        free_done = _wait(free, 25, timeout=60)
        limited_done = _wait(limited, 25, timeout=60)
        assert limited.peak <= 2, limited.peak
        assert most_in_any_second(limited.mail_times) <= 5, limited.mail_times
        # 25 messages at 5 a second take about 5 seconds; the other destination
        # was not held up behind them.
        assert limited_done - limited.mail_times[0] >= 4.0
        assert free_done - started < limited_done - started - 2.0
        assert free.recipients() and len(set(free.recipients())) == 25
    finally:
        limited.stop()


def test_a_421_reply_pattern_suspends_the_destination_for_the_configured_time(
    stack_factory, make_sink
):
    sink: SmtpSink = make_sink()
    sink.rcpt_replies["first@busy.test"] = ["421 4.7.0 Try again later, closing connection"]
    stack = stack_factory(
        {
            "transport": {"routes": {"busy.test": f"smtp:[127.0.0.1]:{sink.port}"}},
            "queue": {"retry_schedule": [0.5], "retry_jitter": 0.0},
            "shaping": {
                "destinations": {
                    f"[127.0.0.1]:{sink.port}": {
                        "suspend_on": ["^421 .*try again later"],
                        "suspend_for": 4.0,
                    }
                }
            },
        }
    )
    _send_many(stack, ["first@busy.test"])
    deadline = time.monotonic() + 20
    while not sink.rcpt_log and time.monotonic() < deadline:
        time.sleep(0.02)
    suspended_at = time.monotonic()
    _send_many(stack, ["second@busy.test"])
    (got, other) = sink.wait_for(2, timeout=30)
    resumed = time.monotonic()
    # Nothing reached the sink while suspended: the next RCPT came after the time.
    assert [r for _, r, _ in sink.rcpt_log][:1] == ["first@busy.test"]
    assert len(sink.rcpt_log) == 3, sink.rcpt_log
    assert resumed - suspended_at >= 4.0 - 0.5
    assert sorted(got.rcpt_tos + other.rcpt_tos) == ["first@busy.test", "second@busy.test"]


def test_two_domains_whose_mx_hosts_are_at_one_provider_share_its_connection_limit(
    stack_factory, dns_server
):
    # Both domains' MX hosts end in .bigmail.test: one provider, one limit.
    for domain, mx in (("one.test", "mx1.bigmail.test"), ("two.test", "mx2.bigmail.test")):
        dns_server.add(domain, "MX", f"10 {mx}.")
        dns_server.add(mx, "A", "127.0.0.1")
    sink = ShapingSink().start()
    try:
        stack = stack_factory(
            {
                "ingress": {"max_recipients": 100},
                "delivery": {"concurrency": 16, "smtp_port": sink.port},
                "shaping": {
                    "providers": {
                        "bigmail": {"mx_suffixes": [".bigmail.test"], "max_connections": 1}
                    }
                },
            }
        )
        stack.add_delivery()
        _send_many(stack, [f"u{n}@{('one', 'two')[n % 2]}.test" for n in range(16)])
        _wait(sink, 16, timeout=60)
        # A limit per domain would have let two connections open at once.
        assert sink.peak == 1, sink.peak
        assert {r.rpartition("@")[2] for r in sink.recipients()} == {"one.test", "two.test"}
    finally:
        sink.stop()
