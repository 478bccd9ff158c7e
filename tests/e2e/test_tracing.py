"""One message is one trace, across every service it passes through."""

from __future__ import annotations

import time

from support.otlp import OtlpReceiver
from support.smtpsink import SmtpSink


def test_one_trace_spans_ingress_policy_queue_and_delivery(stack_factory, make_sink):
    # One recipient is delivered, one deferred (nothing listens on port 1), so
    # the first attempt is reported to the queue: a message delivered to
    # everyone at once never reaches the queue.
    receiver = OtlpReceiver().start()
    try:
        sink: SmtpSink = make_sink()
        stack = stack_factory(
            {
                "transport": {
                    "routes": {
                        "relay.test": f"smtp:[127.0.0.1]:{sink.port}",
                        "down.test": "smtp:[127.0.0.1]:1",
                    }
                },
                "telemetry": {"otlp_endpoint": receiver.endpoint},
                # loopback is trusted, and nothing else would make ingress ask policy
                "ingress": {"trusted_policy": "always"},
            }
        )
        code, reply = stack.send(
            "a@client.test",
            ["r@relay.test", "d@down.test"],
            "Subject: traced\r\n\r\nhello\r\n",
        )
        assert code == 250
        queue_id = reply.decode().rsplit(" ", 1)[1]
        sink.wait_for(1)
        wanted = {"elemta-ingress", "elemta-policy", "elemta-queue", "elemta-delivery"}
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            spans = receiver.snapshot()
            root = [
                s
                for s in spans
                if s.attributes.get("elemta.queue_id") == queue_id and s.service == "elemta-ingress"
            ]
            if root:
                trace_id = root[0].trace_id
                services = {s.service for s in spans if s.trace_id == trace_id}
                if wanted <= services:
                    break
            time.sleep(0.3)
        else:
            raise AssertionError(
                f"spans by service: {sorted({(s.service, s.name, s.trace_id[:8]) for s in receiver.snapshot()})}"
            )
        # Every span but the root has a parent inside the same trace. The
        # failed recipient's retries go on adding spans, and a child can reach
        # the receiver a batch before its parent: wait for the parents to come.
        deadline = time.monotonic() + 15
        while True:
            in_trace = [s for s in receiver.snapshot() if s.trace_id == trace_id]
            ids = {s.span_id for s in in_trace}
            orphans = [s for s in in_trace if s.parent_id and s.parent_id not in ids]
            if not orphans or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert not orphans, orphans
    finally:
        receiver.stop()
