"""Policy's changes to the envelope and the message, applied before the store."""

from __future__ import annotations

from elemta.ingress.policy_client import Decision, EnvelopeChanges, changes_from_pb
from elemta.ingress.transaction import apply_changes
from elemta.rpc.policy.v1 import policy_pb2 as pb

RECEIVED = b"Received: from c by mx; today\r\n"
CONTENT = b"From: a@x\r\nSubject: hi\r\n\r\nbody\r\n"


def test_without_changes_our_received_stays_first_and_policy_headers_follow_it() -> None:
    decision = Decision("accept", add_headers=[("X-A", "1")], remove_headers=["subject"])
    sender, rcpts, message = apply_changes(decision, "s@x", ["r@y"], RECEIVED, CONTENT)
    assert (sender, rcpts) == ("s@x", ["r@y"])
    assert message == RECEIVED + b"X-A: 1\r\nFrom: a@x\r\n\r\nbody\r\n"


def test_a_changed_header_section_and_body_replace_the_originals() -> None:
    header = RECEIVED + b"From: a@x\r\nSubject: changed\r\nX-Milter: yes\r\n"
    changes = EnvelopeChanges(header=header, body=b"new body\r\n")
    decision = Decision("accept", add_headers=[("X-A", "1")], changes=changes)
    _, _, message = apply_changes(decision, "s@x", ["r@y"], RECEIVED, CONTENT)
    assert (
        message
        == RECEIVED
        + b"X-A: 1\r\nFrom: a@x\r\nSubject: changed\r\nX-Milter: yes\r\n\r\nnew body\r\n"
    )


def test_a_header_put_above_our_received_stays_there_with_policy_headers_on_top() -> None:
    changes = EnvelopeChanges(header=b"DKIM-Signature: v=1\r\n" + RECEIVED + b"From: a@x\r\n")
    decision = Decision("accept", add_headers=[("X-A", "1")], changes=changes)
    _, _, message = apply_changes(decision, "s@x", ["r@y"], RECEIVED, CONTENT)
    assert message == b"X-A: 1\r\nDKIM-Signature: v=1\r\n" + RECEIVED + b"From: a@x\r\n\r\nbody\r\n"


def test_recipients_are_added_and_deleted_without_duplicates_and_the_sender_changed() -> None:
    changes = EnvelopeChanges(
        sender="",
        add_recipients=["new@y", "R@Y"],
        delete_recipients=["gone@y"],
    )
    sender, rcpts, _ = apply_changes(
        Decision("accept", changes=changes), "s@x", ["r@y", "Gone@Y"], RECEIVED, CONTENT
    )
    assert (sender, rcpts) == ("", ["r@y", "new@y"])


def test_addresses_from_policy_lose_their_brackets_and_broken_ones_are_dropped() -> None:
    c = changes_from_pb(
        pb.MessageChanges(sender="<b@x>", add_recipients=["<n@y>", "bad address@y", "x\r\n@y"])
    )
    assert c is not None
    assert (c.sender, c.add_recipients, c.header, c.body) == ("b@x", ["n@y"], None, None)
    assert changes_from_pb(pb.MessageChanges()) is None
    assert changes_from_pb(pb.MessageChanges(sender="")).sender == ""  # the null sender
