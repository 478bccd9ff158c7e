"""The policy verdict at the end of DATA, and what happens when policy cannot answer."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest
from ingress_harness import MESSAGE, message_count, queue_id_of, send, stored

from elemta.ingress.policy_client import decision_from_verdict
from elemta.rpc.policy.v1 import policy_pb2 as pb
from elemta.rpc.policy.v1 import policy_pb2_grpc as pb_grpc

from support.dnsserver import free_port


class FakePolicy(pb_grpc.PolicyServiceServicer):
    """A policy service whose verdict the test chooses."""

    def __init__(self) -> None:
        self.verdict = pb.Verdict(action=pb.ACTION_ACCEPT)
        self.delay = 0.0
        self.requests: list[tuple[pb.CheckDataRequest, dict[str, str]]] = []

    def CheckData(self, request, context):  # noqa: N802
        self.requests.append((request, dict(context.invocation_metadata())))
        time.sleep(self.delay)
        return pb.CheckDataResponse(verdict=self.verdict)


@pytest.fixture
def fake_policy() -> Iterator[tuple[FakePolicy, str]]:
    servicer = FakePolicy()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    pb_grpc.add_PolicyServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield servicer, f"127.0.0.1:{port}"
    server.stop(0)


@pytest.fixture
def judged(ingress_factory, fake_policy):
    policy, address = fake_policy
    return ingress_factory({"ingress": {"policy_timeout": 1.0}}, policy=address), policy


def test_without_a_policy_service_data_gets_451_4_3_0_and_nothing_is_stored(
    ingress_factory, shared_nats
):
    runner = ingress_factory(policy=f"127.0.0.1:{free_port()}")
    before = message_count(shared_nats.url)
    assert send(runner.port) == (451, b"4.3.0 Temporary policy failure, try again later")
    assert message_count(shared_nats.url) == before


def test_a_policy_that_answers_too_late_gets_451_4_3_0(judged, shared_nats):
    runner, policy = judged
    policy.delay = 2.0
    before = message_count(shared_nats.url)
    started = time.monotonic()
    assert send(runner.port) == (451, b"4.3.0 Temporary policy failure, try again later")
    assert time.monotonic() - started < 1.9
    assert message_count(shared_nats.url) == before


def test_policy_is_asked_once_with_the_session_the_envelope_and_the_message(judged, shared_nats):
    runner, policy = judged
    code, text = send(runner.port)
    assert code == 250
    qid = queue_id_of(text)
    ((request, _metadata),) = policy.requests
    assert request.session.client_ip == "127.0.0.1" and request.session.client_port > 0
    assert request.session.helo == "client.test" and not request.session.tls
    assert request.session.queue_id == qid
    assert request.sender == "a@client.test" and list(request.recipients) == ["b@local.test"]
    assert request.message == stored(shared_nats.url, qid).data
    assert request.message.startswith(b"Received: ")


@pytest.mark.parametrize(
    "verdict, reply",
    [
        (pb.Verdict(action=pb.ACTION_REJECT), (550, b"5.7.1 Message rejected")),
        (
            pb.Verdict(
                action=pb.ACTION_REJECT, smtp_code=554, enhanced_code="5.7.9", reason="Spam"
            ),
            (554, b"5.7.9 Spam"),
        ),
        (
            pb.Verdict(action=pb.ACTION_TEMPFAIL),
            (451, b"4.7.1 Message temporarily deferred, try again later"),
        ),
        (
            pb.Verdict(action=pb.ACTION_TEMPFAIL, smtp_code=450, reason="Greylisted"),
            (450, b"4.7.1 Greylisted"),
        ),
    ],
    ids=["reject", "reject-custom", "tempfail", "tempfail-custom"],
)
def test_reject_and_tempfail_verdicts_become_the_reply_and_nothing_is_stored(
    judged, shared_nats, verdict, reply
):
    runner, policy = judged
    policy.verdict = verdict
    before = message_count(shared_nats.url)
    assert send(runner.port) == reply
    assert message_count(shared_nats.url) == before


def test_a_discard_verdict_answers_250_and_stores_nothing(judged, shared_nats):
    runner, policy = judged
    policy.verdict = pb.Verdict(action=pb.ACTION_DISCARD)
    before = message_count(shared_nats.url)
    assert send(runner.port) == (250, b"2.0.0 Ok: discarded")
    assert message_count(shared_nats.url) == before


def test_a_hold_verdict_stores_the_message_on_hold(judged, shared_nats):
    runner, policy = judged
    policy.verdict = pb.Verdict(action=pb.ACTION_HOLD)
    code, text = send(runner.port)
    assert code == 250
    assert stored(shared_nats.url, queue_id_of(text)).envelope.hold


def test_policy_headers_are_added_after_received_and_removed_headers_are_dropped(
    judged, shared_nats
):
    runner, policy = judged
    policy.verdict = pb.Verdict(
        action=pb.ACTION_ACCEPT,
        add_headers=[
            pb.Header(name="X-Spam-Score", value="1.5"),
            pb.Header(name="Bad Name", value="x"),
            pb.Header(name="X-Injected", value="a\r\nBcc: evil@foreign.test"),
        ],
        remove_headers=["to", "X-Not-There"],
    )
    code, text = send(runner.port, "To: b@local.test\r\n  folded\r\n" + MESSAGE)
    assert code == 250
    data = stored(shared_nats.url, queue_id_of(text)).data
    received, rest = data.split(b"\r\nX-Spam-Score: 1.5\r\n", 1)
    assert received.startswith(b"Received: ") and received.count(b"\r\n") == 2
    # A line break in a policy value becomes a folded continuation, never a field.
    assert rest.startswith(b"X-Injected: a\r\n\tBcc: evil@foreign.test\r\nFrom: a@client.test\r\n")
    assert b"To:" not in rest and b"folded" not in rest and b"Bad Name" not in data


def test_verdict_mapping_keeps_codes_in_the_class_of_the_action():
    wrong = decision_from_verdict(
        pb.Verdict(action=pb.ACTION_REJECT, smtp_code=451, enhanced_code="4.1.1", reason="x")
    )
    assert wrong.reply == "550 5.1.1 x"
    unknown = decision_from_verdict(pb.Verdict())
    assert unknown.action == "tempfail" and unknown.reply.startswith("451 4.3.0")
    assert decision_from_verdict(pb.Verdict(action=pb.ACTION_ACCEPT)).action == "accept"
