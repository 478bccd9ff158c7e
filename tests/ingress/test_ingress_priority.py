"""Message priorities at the door: MT-PRIORITY (RFC 6710) and the [priorities] rules
into the stored envelope."""

from __future__ import annotations

import pytest
from ingress_harness import RawSMTP, queue_id_of, stored

from elemta.common.config import PrioritySettings
from elemta.common.priority import BAD_MT_PRIORITY, Priorities
from elemta.ingress.arguments import MAIL_UNKNOWN, read_mail

ON = {"priorities": {"enabled": True}}


def _send(s, sender: str, params: list[str], rcpt: str = "b@local.test") -> str:
    assert s.mail(sender, params)[0] == 250
    assert s.rcpt(rcpt)[0] == 250
    code, text = s.data("Subject: priority\r\n\r\nHello.\r\n")
    assert code == 250, text
    return queue_id_of(text)


def test_mt_priority_is_offered_and_honoured_from_a_trusted_client(
    ingress_factory, smtp, shared_nats
):
    s = smtp(ingress_factory(ON))
    s.ehlo()
    assert s.has_extn("mt-priority")
    qid = _send(s, "a@client.test", ["MT-PRIORITY=6"])
    high = stored(shared_nats.url, qid)
    assert (high.envelope.priority, high.subject) == (6, f"elemta.high.msg.{qid}")
    qid = _send(s, "a@client.test", ["MT-PRIORITY=-4"])
    low = stored(shared_nats.url, qid)
    assert (low.envelope.priority, low.subject) == (-4, f"elemta.low.msg.{qid}")
    qid = _send(s, "a@client.test", [])
    assert stored(shared_nats.url, qid).subject == f"elemta.msg.{qid}"


def test_mt_priority_from_an_untrusted_client_is_taken_but_not_honoured(
    ingress_factory, smtp, shared_nats
):
    runner = ingress_factory(
        {
            **ON,
            "priorities": {"enabled": True, "senders": {"client.test": -2}},
            "server": {"trusted_networks": ["192.0.2.0/24"]},
        }
    )
    s = smtp(runner)
    s.ehlo()
    assert s.has_extn("mt-priority")
    qid = _send(s, "a@client.test", ["MT-PRIORITY=9"])
    # the rules' priority, as if the client had asked nothing
    assert stored(shared_nats.url, qid).envelope.priority == -2
    qid = _send(s, "a@other.test", ["MT-PRIORITY=9"])
    assert stored(shared_nats.url, qid).envelope.priority == 0


def test_rules_give_the_priority_when_the_client_asks_none(ingress_factory, smtp, shared_nats):
    runner = ingress_factory(
        {
            "priorities": {
                "enabled": True,
                "senders": {"boss@client.test": 5, ".lists.test": -5},
                "routes": {"local.test": 2},
            }
        }
    )
    s = smtp(runner)
    s.ehlo()
    assert stored(shared_nats.url, _send(s, "boss@client.test", [])).envelope.priority == 5
    assert stored(shared_nats.url, _send(s, "news@a.lists.test", [])).envelope.priority == -5
    assert stored(shared_nats.url, _send(s, "someone@client.test", [])).envelope.priority == 2


def test_without_priorities_mt_priority_is_neither_offered_nor_accepted(
    ingress_factory, smtp, shared_nats
):
    s = smtp(ingress_factory())
    s.ehlo()
    assert not s.has_extn("mt-priority")
    code, text = s.mail("a@client.test", ["MT-PRIORITY=3"])
    assert (code, text.decode()) == (555, MAIL_UNKNOWN[4:])
    qid = _send(s, "a@client.test", [])
    assert stored(shared_nats.url, qid).envelope.priority == 0


@pytest.mark.parametrize(
    "param",
    ["MT-PRIORITY=10", "MT-PRIORITY=-10", "MT-PRIORITY=high", "MT-PRIORITY", "MT-PRIORITY=1.5"],
)
def test_a_malformed_mt_priority_is_refused_with_501(ingress_factory, param):
    runner = ingress_factory(ON)
    with RawSMTP(runner.port) as c:
        c.reply()
        c.cmd(b"EHLO client.test")
        reply = c.cmd(f"MAIL FROM:<a@client.test> {param}".encode())
        assert reply.decode().strip() == BAD_MT_PRIORITY
        # the session goes on: a good MAIL is taken
        assert c.cmd(b"MAIL FROM:<a@client.test> MT-PRIORITY=+3").startswith(b"250")


def test_mt_priority_given_twice_is_refused_with_501():
    reply = read_mail("FROM:<a@b.test> MT-PRIORITY=1 MT-PRIORITY=2", True, 0, mt_priority=True)
    assert str(reply).startswith("501 5.5.4")


def test_the_rules_apply_in_order_user_sender_route():
    p = Priorities(
        PrioritySettings(
            enabled=True,
            users={"Alerts": 7},
            senders={"ceo@example.org": 4, "example.org": 1, ".corp.example": -3},
            routes={"slow.example": -6, ".partner.example": 3},
        )
    )
    assert p.assign("ceo@example.org", ["x@slow.example"], user="alerts") == 7
    assert p.assign("ceo@example.org", ["x@slow.example"], mt_priority=-9, honoured=True) == -9
    assert p.assign("ceo@example.org", ["x@slow.example"], mt_priority=9) == 4
    assert p.assign("clerk@example.org", ["x@slow.example"]) == 1
    assert p.assign("a@b.corp.example", []) == -3
    assert p.assign("a@other.test", ["x@slow.example", "y@eu.partner.example"]) == 3
    assert p.assign("a@other.test", ["x@nowhere.test"]) == 0
    assert (p.class_of(3), p.class_of(0), p.class_of(-6)) == ("high", "normal", "low")
    off = Priorities(PrioritySettings(senders={"ceo@example.org": 4}))
    assert off.assign("ceo@example.org", [], mt_priority=9, honoured=True) == 0
    assert off.class_of(9) == "normal"
