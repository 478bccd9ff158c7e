"""Administration through the running system (nats-server, policy, queue, delivery,
ingress and api as processes): each action on the queue changes what delivery
does, bulk actions by sender domain touch exactly the matching messages, and a
suspended destination gets no attempt until the suspension ends or is lifted."""

from __future__ import annotations

import asyncio
import email
import email.policy
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from support.apiserver import make_keys
from support.dnsserver import DnsServer
from support.natsserver import NatsServer
from support.smtpsink import SmtpSink
from support.stack import Stack

DOMAINS = ("hold.test", "retry.test", "bounce.test", "susp.test", "short.test", "slow.test")


def message(sender: str, rcpt: str, subject: str) -> str:
    return f"From: <{sender}>\r\nTo: <{rcpt}>\r\nSubject: {subject}\r\n\r\nHello.\r\n"


class Admin:
    """The running stack, a sink every test domain is routed to, and an admin key."""

    def __init__(self, stack: Stack, sink: SmtpSink, token: str) -> None:
        self.stack = stack
        self.sink = sink
        self.http = httpx.Client(
            base_url=stack.api_url, headers={"Authorization": f"Bearer {token}"}, timeout=30
        )

    def send(self, sender: str, rcpt: str, subject: str = "hi") -> str:
        code, reply = self.stack.send(sender, [rcpt], message(sender, rcpt, subject))
        assert code == 250, reply
        return reply.decode().rsplit(" ", 1)[1]  # "... queued as <id>"

    def get(self, path: str, **params: Any) -> Any:
        resp = self.http.get(path, params=params)
        assert resp.status_code == 200, resp.text
        return resp.json()

    def post(self, path: str, json: Any = None, status: int = 200) -> Any:
        resp = self.http.post(path, json=json)
        assert resp.status_code == status, resp.text
        return resp.json()

    def state(self, qid: str) -> str:
        found = self.get("/api/v1/messages", limit=1000)["messages"]
        return next((m["state"] for m in found if m["id"] == qid), "gone")

    def wait(self, what: Callable[[], bool], timeout: float = 30.0, why: str = "") -> None:
        deadline = time.monotonic() + timeout
        while not what():
            assert time.monotonic() < deadline, why or "condition never held"
            time.sleep(0.1)

    def wait_state(self, qid: str, state: str) -> None:
        self.wait(lambda: self.state(qid) == state, why=f"{qid} never {state}")

    def delivered_to(self, rcpt: str) -> bool:
        return rcpt in self.sink.recipients()

    def attempts_to(self, rcpt: str) -> int:
        return sum(1 for _, r, _ in self.sink.rcpt_log if r == rcpt)


@pytest.fixture(scope="module")
def admin(tmp_path_factory: pytest.TempPathFactory, shared_dns: DnsServer) -> Iterator[Admin]:
    workdir = tmp_path_factory.mktemp("admin")
    nats = NatsServer(workdir / "nats")
    nats.start()
    sink = SmtpSink().start()
    stack = Stack(
        workdir / "stack",
        nats.url,
        shared_dns.port,
        {
            "transport": {"routes": {d: f"smtp:[127.0.0.1]:{sink.port}" for d in DOMAINS}},
            # Deferred messages wait a minute: long enough that only an action
            # (retry now, release, a lifted suspension) delivers them in a test.
            "queue": {"retry_schedule": [60.0], "retry_jitter": 0.0, "scheduler_interval": 0.2},
        },
    )
    try:
        stack.start("policy", "queue", "delivery", "ingress", "api")
        token = asyncio.run(make_keys(nats.url))["admin"]
        yield Admin(stack, sink, token)
    finally:
        stack.stop()
        sink.stop()
        nats.stop()


def deferred(admin: Admin, sender: str, rcpt: str) -> str:
    """A message whose destination answers 451 until told otherwise: deferred."""
    admin.sink.rcpt_replies[rcpt] = "451 4.3.0 busy"
    qid = admin.send(sender, rcpt)
    admin.wait_state(qid, "deferred")
    return qid


def test_a_held_message_is_not_delivered_until_released(admin: Admin) -> None:
    rcpt = "h1@hold.test"
    qid = deferred(admin, "alice@client.test", rcpt)
    tried = admin.attempts_to(rcpt)
    result = admin.post(f"/api/v1/messages/{qid}/hold")
    assert (result["matched"], result["touched"]) == (1, 1)
    assert admin.state(qid) == "held"
    del admin.sink.rcpt_replies[rcpt]  # the destination would accept now

    # Its parked retry, made due, is dropped: a held message gets no attempt.
    admin.post(f"/api/v1/messages/{qid}/retry")
    admin.wait(lambda: admin.get("/api/v1/queue")["deferred"] == 0, why="parked job stayed")
    assert admin.attempts_to(rcpt) == tried
    assert admin.state(qid) == "held"
    again = admin.post(f"/api/v1/messages/{qid}/hold")
    assert again["touched"] == 0 and "held already" in again["results"][qid]["error"]

    assert admin.post(f"/api/v1/messages/{qid}/release")["touched"] == 1
    admin.wait(lambda: admin.delivered_to(rcpt), why="not delivered after release")
    admin.wait_state(qid, "gone")
    events = [e["type"] for e in admin.get(f"/api/v1/messages/{qid}/events")["events"]]
    assert events.index("hold") < events.index("released") < events.index("delivered")


def test_retry_now_delivers_a_deferred_message_at_once(admin: Admin) -> None:
    rcpt = "r1@retry.test"
    qid = deferred(admin, "alice@client.test", rcpt)
    del admin.sink.rcpt_replies[rcpt]
    started = time.monotonic()
    assert admin.post(f"/api/v1/messages/{qid}/retry")["touched"] == 1
    admin.wait(lambda: admin.delivered_to(rcpt), timeout=20, why="retry now did not deliver")
    assert time.monotonic() - started < 20  # the schedule said 60 s


def test_bounce_returns_the_message_to_its_sender_and_it_stays_visible_as_failed(
    admin: Admin,
) -> None:
    rcpt = "b1@bounce.test"
    qid = deferred(admin, "alice@local.test", rcpt)
    assert admin.post(f"/api/v1/messages/{qid}/bounce")["touched"] == 1
    maildir = admin.stack.workdir / "var" / "mail" / "local.test" / "alice" / "new"
    admin.wait(lambda: maildir.is_dir() and any(maildir.iterdir()), why="no DSN")
    (dsn_file,) = list(maildir.iterdir())
    dsn = email.message_from_bytes(Path(dsn_file).read_bytes(), policy=email.policy.default)
    assert dsn.get_param("report-type") == "delivery-status"
    assert b"administrator" in Path(dsn_file).read_bytes()
    assert admin.state(qid) == "failed"
    failed = admin.get("/api/v1/messages", state="failed")["messages"]
    assert [m["final"] for m in failed if m["id"] == qid] == [{rcpt: "bounced"}]


def test_delete_drops_a_message_without_notice(admin: Admin) -> None:
    rcpt = "d1@slow.test"
    qid = deferred(admin, "alice@local.test", rcpt)
    assert admin.post(f"/api/v1/messages/{qid}/delete")["touched"] == 1
    assert admin.state(qid) == "gone"
    events = [e["type"] for e in admin.get(f"/api/v1/messages/{qid}/events")["events"]]
    assert events[-1] == "deleted" and "bounced" not in events


def test_a_suspended_destination_gets_no_attempt_until_the_suspension_is_lifted(
    admin: Admin,
) -> None:
    admin.post(
        "/api/v1/suspensions",
        {"domain": "susp.test", "reason": "their migration", "duration": 200},
        201,
    )
    listed = admin.get("/api/v1/suspensions")
    assert [s["domain"] for s in listed] == ["susp.test"]
    rcpt = "s1@susp.test"
    qid = admin.send("alice@client.test", rcpt)
    admin.wait_state(qid, "deferred")
    summary = admin.get("/api/v1/messages", recipient=rcpt)["messages"][0]
    assert "suspended" in summary["last_error"]["text"]
    assert admin.attempts_to(rcpt) == 0  # no connection at all
    row = next(
        r
        for r in admin.get("/api/v1/queue/summary")["destinations"]
        if r["destination"] == "susp.test"
    )
    assert row["suspended_until"] > time.time() and row["deferred"] == 1

    resp = admin.http.delete("/api/v1/suspensions/susp.test")
    assert resp.status_code == 204
    admin.wait(lambda: admin.delivered_to(rcpt), timeout=20, why="not delivered once lifted")
    assert admin.get("/api/v1/suspensions") == []


def test_a_suspension_that_ends_lets_delivery_go_on_by_itself(admin: Admin) -> None:
    until = time.time() + 4
    admin.post("/api/v1/suspensions", {"domain": "short.test", "until": until}, 201)
    rcpt = "s2@short.test"
    qid = admin.send("alice@client.test", rcpt)
    admin.wait_state(qid, "deferred")
    assert admin.attempts_to(rcpt) == 0
    admin.wait(lambda: admin.delivered_to(rcpt), timeout=30, why="not delivered after the end")
    assert time.time() >= until


def test_a_bulk_hold_by_sender_domain_touches_exactly_the_matching_messages(
    admin: Admin,
) -> None:
    rcpt = "z@slow.test"
    admin.sink.rcpt_replies[rcpt] = "451 4.3.0 busy"
    ours = [admin.send(f"u{n}@bulk-a.test", rcpt) for n in range(3)]
    theirs = [admin.send(f"v{n}@bulk-b.test", rcpt) for n in range(2)]
    for qid in ours + theirs:
        admin.wait_state(qid, "deferred")

    result = admin.post("/api/v1/queue/actions/hold", {"sender_domain": "bulk-a.test"})
    assert (result["matched"], result["touched"]) == (3, 3)
    assert sorted(result["results"]) == sorted(ours)
    held = {m["id"] for m in admin.get("/api/v1/messages", state="held")["messages"]}
    assert held >= set(ours) and not held & set(theirs)
    assert {admin.state(q) for q in theirs} == {"deferred"}

    back = admin.post(
        "/api/v1/queue/actions/release", {"sender_domain": "bulk-a.test", "state": "held"}
    )
    assert back["touched"] == 3
    gone = admin.post("/api/v1/queue/actions/delete", {"recipient": rcpt})
    assert gone["touched"] == 5
    audit = admin.get("/api/v1/audit", limit=3)["entries"]
    assert [e["action"] for e in audit] == ["queue.delete", "queue.release", "queue.hold"]
    assert audit[2]["filter"] == {"sender_domain": "bulk-a.test"} and audit[2]["touched"] == 3


def test_a_bulk_action_needs_a_filter(admin: Admin) -> None:
    resp = admin.http.post("/api/v1/queue/actions/delete", json={})
    assert resp.status_code == 422
    assert "filter" in resp.json()["detail"]


def test_the_health_endpoint_sees_every_service_ready(admin: Admin) -> None:
    health = admin.get("/api/v1/health")
    assert {h["service"]: h["ready"] for h in health} == dict.fromkeys(
        ("api", "ingress", "policy", "queue", "delivery"), True
    )


def test_mail_delivered_at_once_shows_its_whole_journey(admin: Admin) -> None:
    """Delivery stores the history of what it ends at once several messages to a
    record; each message's own journey comes back, and no one else's."""
    rcpts = [f"at-once-{n}@slow.test" for n in range(5)]
    qids = [admin.send("alice@local.test", rcpt) for rcpt in rcpts]
    admin.wait(lambda: all(admin.delivered_to(r) for r in rcpts), why="not delivered")
    for qid, rcpt in zip(qids, rcpts, strict=True):

        def journey(qid: str = qid) -> list[dict[str, Any]]:
            return list(admin.get(f"/api/v1/messages/{qid}/events")["events"])

        admin.wait(lambda: any(e["type"] == "done" for e in journey()), why=f"{qid}: no done")
        events = journey()
        assert [e["type"] for e in events] == ["accepted", "attempt", "delivered", "done"]
        assert {e["id"] for e in events} == {qid}
        assert events[0]["recipients"] == [rcpt] and events[2]["recipient"] == rcpt
