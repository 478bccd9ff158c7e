"""The ingress as a process: readiness, metrics, traces in the stored message, SIGTERM drain."""

from __future__ import annotations

import signal
import smtplib
import socket
import time

from ingress_harness import MESSAGE, RawSMTP, queue_id_of, send, stored, wait_until
from prometheus_client import REGISTRY

from support.dnsserver import free_port
from support.stack import Stack


def refused(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return False
    except ConnectionRefusedError:
        return True


def test_sigterm_stops_accepting_at_once_lets_the_open_session_finish_and_exits_0(
    tmp_path, shared_nats, policy_address
):
    stack = Stack(
        tmp_path,
        shared_nats.url,
        free_port(),
        {"policy": {"address": policy_address}, "ingress": {"drain_timeout": 10.0}},
    )
    stack.start("ingress")
    proc = stack.processes["ingress"]
    try:
        code, text = send(stack.smtp_port)
        assert code == 250
        msg = stored(shared_nats.url, queue_id_of(text))
        assert msg is not None and "traceparent" in msg.headers
        metrics = proc.metrics()
        assert 'elemta_ingress_messages_total{result="accepted"} 1.0' in metrics
        assert "elemta_ingress_accept_seconds_count 1.0" in metrics

        busy = smtplib.SMTP("127.0.0.1", stack.smtp_port, local_hostname="client.test", timeout=15)
        busy.ehlo()
        assert busy.mail("a@client.test")[0] == 250
        assert busy.rcpt("b@local.test")[0] == 250
        idle = RawSMTP(stack.smtp_port)
        idle.reply()
        idle.cmd(b"EHLO client.test")

        assert proc.proc is not None
        proc.proc.send_signal(signal.SIGTERM)
        started = time.monotonic()
        wait_until(lambda: refused(stack.smtp_port), timeout=5, what="listener closed")
        assert time.monotonic() - started < 2
        # a session without a transaction is told to go away ...
        assert idle.reply() == b"421 4.3.2 Service shutting down\r\n"
        assert idle.closed()
        # ... the one in the middle of a transaction finishes its message
        code, text = busy.data(MESSAGE)
        assert code == 250
        assert stored(shared_nats.url, queue_id_of(text)) is not None
        assert busy.getreply() == (421, b"4.3.2 Service shutting down")
        assert proc.proc.wait(15) == 0
    finally:
        stack.stop()


def test_readiness_names_nats_stream_and_listener_and_all_pass_when_running(ingress):
    assert ingress.failing() == []
    assert set(ingress.health.checks) == {"nats", "stream", "listener"}


def test_messages_and_replies_are_counted_without_per_message_labels(ingress, smtp):
    def value(name: str, labels: dict[str, str] | None = None) -> float:
        return REGISTRY.get_sample_value(name, labels or {}) or 0.0

    accepted = value("elemta_ingress_messages_total", {"result": "accepted"})
    rejected = value("elemta_ingress_messages_total", {"result": "rejected"})
    replies_5xx = value("elemta_ingress_replies_total", {"code_class": "5xx"})
    connections = value("elemta_ingress_connections_total")
    s = smtp(ingress)
    s.ehlo()
    s.mail("a@client.test")
    s.rcpt("b@local.test")
    assert s.data(MESSAGE)[0] == 250
    s.mail("a@client.test")
    s.rcpt("b@local.test")
    assert s.data(MESSAGE + "q" * 1200 + "\r\n")[0] == 500
    assert value("elemta_ingress_messages_total", {"result": "accepted"}) == accepted + 1
    assert value("elemta_ingress_messages_total", {"result": "rejected"}) == rejected + 1
    assert value("elemta_ingress_replies_total", {"code_class": "5xx"}) == replies_5xx + 1
    assert value("elemta_ingress_connections_total") == connections + 1
    assert value("elemta_ingress_sessions") >= 1
    assert value("elemta_ingress_message_bytes_count") >= 1
