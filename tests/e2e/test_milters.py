"""Milters behind the whole system: a purepythonmilter test milter, clamav-milter and
OpenDKIM from Debian, asked by policy at end of DATA; what they say is the SMTP reply,
what they change is what the mailbox or the next server gets."""

from __future__ import annotations

import asyncio
import email
import email.message
import email.policy
import json
import re
import smtplib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dkim
import nats
import pytest
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from support.clamd import EICAR, SIGNATURE, ClamdServer
from support.dnsserver import DnsServer, free_port
from support.milters import ClamavMilter, OpenDkim
from support.natsserver import NatsServer
from support.smtpsink import SmtpSink
from support.stack import Stack
from support.testmilter import TestMilter


def maildir_messages(root: Path, address: str) -> list[email.message.EmailMessage]:
    local, _, domain = address.partition("@")
    new = root / domain / local / "new"
    return (
        [
            email.message_from_bytes(p.read_bytes(), policy=email.policy.default)  # type: ignore[misc]
            for p in sorted(new.iterdir())
        ]
        if new.is_dir()
        else []
    )


def wait_maildir(root: Path, address: str, timeout: float = 30.0) -> list[Any]:
    deadline = time.monotonic() + timeout
    while not (found := maildir_messages(root, address)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert found, f"nothing for {address} in {root}"
    return found


class World:
    def __init__(self, root: Path) -> None:
        self.nats = NatsServer(root / "nats")
        self.dns = DnsServer()
        self.milter = TestMilter()
        self.clamd = ClamdServer(root / "clamd")
        self.clamav_milter: ClamavMilter | None = None
        self.opendkim = OpenDkim(root / "opendkim")
        self.sink = SmtpSink()
        self.root = root
        self.stack: Stack | None = None

    def start(self) -> World:
        self.nats.start()
        self.dns.start()
        self.milter.start()
        self.clamd.start()
        self.clamav_milter = ClamavMilter(self.root / "clamav-milter", self.clamd.address)
        self.clamav_milter.start()
        self.opendkim.start()
        self.sink.start()
        milters: list[Any] = [
            {
                "address": f"inet:127.0.0.1:{free_port()}",
                "name": "gone",
                "default_action": "accept",
            },
            {"address": self.milter.address, "name": "test"},
            {"address": self.clamav_milter.address, "name": "clamav"},
            {"address": self.opendkim.address, "name": "opendkim"},
        ]
        self.stack = Stack(
            self.root / "stack",
            self.nats.url,
            self.dns.port,
            {
                "policy": {"milters": milters},
                "transport": {"routes": {"remote.test": f"smtp:[127.0.0.1]:{self.sink.port}"}},
            },
        ).start()
        return self

    def stop(self) -> None:
        for part in (
            self.stack,
            self.sink,
            self.opendkim,
            self.clamav_milter,
            self.clamd,
            self.milter,
            self.dns,
            self.nats,
        ):
            if part is not None:
                part.stop()

    @property
    def maildir(self) -> Path:
        assert self.stack is not None
        return self.stack.workdir / "var" / "mail"

    def send(
        self,
        todo: str,
        sender: str = "a@client.test",
        rcpts: tuple[str, ...] = ("bob@local.test",),
        helo: str = "client.test",
        body: str = "Hello there.",
        headers: str = "",
    ) -> tuple[int, str]:
        assert self.stack is not None
        text = (
            f"From: {sender}\r\nTo: {rcpts[0]}\r\nSubject: milter test\r\n"
            f"Date: Mon, 30 Nov 2026 10:00:00 +0000\r\nMessage-ID: <{time.time_ns()}@t>\r\n"
            f"X-Milter-Do: {todo}\r\n{headers}\r\n{body}\r\n"
        )
        with smtplib.SMTP("127.0.0.1", self.stack.smtp_port, local_hostname=helo) as s:
            s.ehlo()
            s.mail(sender)
            for r in rcpts:
                code, msg = s.rcpt(r)
                assert code == 250, (code, msg)
            code, msg = s.data(text)
        return code, msg.decode()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    w = World(tmp_path_factory.mktemp("milters"))
    try:
        w.start()
        yield w
    finally:
        w.stop()


async def _history(url: str, qid: str) -> list[dict[str, Any]]:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        sub = await js.pull_subscribe(
            f"elemta.events.{qid}",
            stream="ELEMTA_EVENTS",
            config=ConsumerConfig(ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.ALL),
        )
        out: list[dict[str, Any]] = []
        try:
            for m in await sub.fetch(64, timeout=1.0):
                record = json.loads(m.data)
                out.extend(record if isinstance(record, list) else [record])
        except TimeoutError:
            pass
        return out
    finally:
        await nc.close()


def history(world: World, qid: str, until: str, timeout: float = 20.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        events = asyncio.run(_history(world.nats.url, qid))
        if any(e["type"] == until for e in events) or time.monotonic() > deadline:
            return events
        time.sleep(0.2)


def queue_id(reply: str) -> str:
    m = re.search(r"queued as (\w+)", reply)
    assert m, reply
    return m.group(1)


@pytest.mark.parametrize(
    ("todo", "kwargs", "expected"),
    [
        ("reject", {}, (550, "5.7.1 Command rejected")),
        ("tempfail", {}, (451, "4.7.1 Service unavailable - try again later")),
        ("reply-5", {}, (554, "5.7.0 Not with that content")),
        ("reply-4", {}, (452, "4.3.1 Come back later")),
        ("accept", {"helo": "reject.helo.test"}, (550, "5.7.1 Command rejected")),
        ("accept", {"sender": "tempfail-at-mail@client.test"}, (451, "4.7.1 Later")),
        (
            "accept",
            {"rcpts": ("bob@local.test", "refused@local.test")},
            (550, "5.1.1 No such user here"),
        ),
    ],
)
def test_a_milters_refusal_at_any_step_is_the_reply_to_the_message(
    world: World, todo: str, kwargs: dict[str, Any], expected: tuple[int, str]
) -> None:
    assert world.send(todo, **kwargs) == expected


def test_clamav_milter_refuses_the_eicar_test_file(world: World) -> None:
    code, text = world.send("accept", body=EICAR.decode())
    assert code == 550 and text.startswith(f"5.7.1 Virus found: {SIGNATURE}"), (code, text)


def test_every_edit_reaches_the_stored_envelope_and_the_mailbox(world: World) -> None:
    code, text = world.send(
        "edits", rcpts=("dora@local.test", "removed@local.test"), headers="X-Remove-Me: yes\r\n"
    )
    assert code == 250, text
    (dora,) = wait_maildir(world.maildir, "dora@local.test")
    (added,) = wait_maildir(world.maildir, "added@local.test")
    raw = dora.as_bytes()
    assert dora["Return-Path"] == "<bounces@milter.test>"  # change sender
    assert dora["Subject"] == "changed by the milter"  # change header
    assert dora["X-Remove-Me"] is None  # delete header
    assert dora["X-Inserted"] == "at the top"  # insert header
    assert raw.index(b"X-Inserted:") < raw.index(b"Received:")
    assert "i=" in dora["X-Milter-Seen"]  # add header
    assert dora.get_content() == "The milter wrote this body.\n"  # replace body
    assert added["Subject"] == "changed by the milter"  # add recipient
    assert maildir_messages(world.maildir, "removed@local.test") == []  # delete recipient
    assert dora["X-Virus-Status"] == "Clean"  # and the next milter ran on the result
    record = next(e for e in history(world, queue_id(text), "policy") if e["type"] == "policy")
    test = next(m for m in record["checks"]["milters"] if m["milter"] == "test")
    assert "replace body" in test["edits"] and "delete recipient" in test["edits"]
    gone = record["checks"]["milters"][0]
    assert gone["milter"] == "gone" and gone["default"] == "accept"


def test_skip_ends_the_body_early_and_the_milter_decides_on_what_it_saw(world: World) -> None:
    body = ("y" * 998 + "\r\n") * 200  # four chunks of 64 KiB
    code, _ = world.send("skip", rcpts=("erin@local.test",), body=body)
    assert code == 250
    (erin,) = wait_maildir(world.maildir, "erin@local.test")
    assert erin["X-Body-Chunks"] == "1"
    assert len(erin.get_content()) >= 200 * 999  # the body itself is kept whole


def test_discard_answers_250_and_quarantine_holds_the_message(world: World) -> None:
    assert world.send("discard", rcpts=("fred@local.test",))[0] == 250
    code, text = world.send("quarantine", rcpts=("fred@local.test",))
    assert code == 250
    events = history(world, queue_id(text), "hold")
    assert [e["type"] for e in events if e["type"] in ("policy", "hold")] == ["policy", "hold"]
    assert world.send("accept", rcpts=("fred@local.test",))[0] == 250
    (only,) = wait_maildir(world.maildir, "fred@local.test")
    assert only["X-Milter-Do"] == "accept"
    time.sleep(0.5)
    assert len(maildir_messages(world.maildir, "fred@local.test")) == 1


def test_opendkim_signs_outbound_mail_and_the_signature_verifies_at_the_next_server(
    world: World,
) -> None:
    code, text = world.send("accept", sender="ann@example.org", rcpts=("carol@remote.test",))
    assert code == 250, text
    (received,) = world.sink.wait_for(1)
    signed = email.message_from_bytes(received.content, policy=email.policy.default)
    assert signed["DKIM-Signature"] is not None
    assert "d=example.org" in signed["DKIM-Signature"]
    assert "s=milter" in signed["DKIM-Signature"]

    def dns(name: bytes, timeout: int = 5) -> bytes:
        assert name == b"milter._domainkey.example.org."
        return world.opendkim.dns_txt.encode()

    assert dkim.verify(received.content, dnsfunc=dns)
