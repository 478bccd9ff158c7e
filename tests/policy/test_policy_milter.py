"""The milter client against a real milter (purepythonmilter), a hanging one and none."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from elemta.common.message import join_message, split_message
from elemta.policy.milter import MilterAddress, MilterChain, MilterSettings
from elemta.policy.milter.message import MessageState
from elemta.policy.milter.protocol import Action, MilterProtocolError, offer, parse_negotiation

from support.dnsserver import free_port
from support.testmilter import TestMilter

SESSION: dict[str, Any] = {
    "client_ip": "192.0.2.7",
    "client_port": 40000,
    "helo": "client.test",
    "queue_id": "QID123",
}
RECEIVED = (
    b"Received: from client.test ([192.0.2.7]) by mx.test; Mon, 30 Nov 2026 10:00:00 +0000\r\n"
)


def message(todo: str, body: bytes = b"Hello there.\r\n") -> bytes:
    return (
        RECEIVED + b"From: a@client.test\r\nTo: bob@local.test\r\nSubject: hello\r\n"
        b" folded\r\nX-Remove-Me: bye\r\nX-Milter-Do: " + todo.encode() + b"\r\n\r\n" + body
    )


@pytest.fixture(scope="module")
def milter() -> Iterator[TestMilter]:
    m = TestMilter().start()
    yield m
    m.stop()


def settings(address: str, **kw: Any) -> MilterSettings:
    kw.setdefault("hostname", "mx.test")
    return MilterSettings(MilterAddress.parse(address), **kw)


async def ask(chain: MilterChain, todo: str, **kw: Any) -> Any:
    v = await chain.data(
        kw.get("session", SESSION),
        kw.get("sender", "a@client.test"),
        kw.get("recipients", ["bob@local.test", "removed@local.test"]),
        kw.get("msg", message(todo)),
    )
    assert v is not None
    return v


@pytest.mark.parametrize(
    ("todo", "action", "code", "enhanced", "reason"),
    [
        ("reject", "reject", 550, "5.7.1", "Command rejected"),
        ("tempfail", "tempfail", 451, "4.7.1", "Service unavailable - try again later"),
        ("reply-5", "reject", 554, "5.7.0", "Not with that content"),
        ("reply-4", "tempfail", 452, "4.3.1", "Come back later"),
        ("discard", "discard", 0, "", ""),
    ],
)
async def test_each_end_of_message_reply_becomes_the_verdict(
    milter: TestMilter, todo: str, action: str, code: int, enhanced: str, reason: str
) -> None:
    v = await ask(MilterChain([settings(milter.address)]), todo)
    assert (v.action, v.code, v.enhanced, v.reason) == (action, code, enhanced, reason)
    assert v.changes is None
    assert v.notes["milters"][0]["at"] == "end of message"


async def test_accept_keeps_the_milters_header_and_quarantine_holds(milter: TestMilter) -> None:
    chain = MilterChain([settings(milter.address)])
    accepted = await ask(chain, "accept")
    assert accepted.action == "accept"
    assert b"\r\nX-Milter-Seen: " in accepted.changes.header
    held = await ask(chain, "quarantine")
    assert (held.action, held.reason) == ("hold", "looks odd")
    assert b"\r\nX-Milter-Seen: " in held.changes.header


async def test_refusals_at_helo_mail_and_rcpt_refuse_the_message(milter: TestMilter) -> None:
    chain = MilterChain([settings(milter.address)])
    helo = await ask(chain, "accept", session={**SESSION, "helo": "reject.helo.test"})
    assert (helo.action, helo.code, helo.notes["milters"][0]["at"]) == ("reject", 550, "helo")
    mail = await ask(chain, "accept", sender="tempfail-at-mail@client.test")
    assert (mail.action, mail.code, mail.enhanced, mail.reason) == (
        "tempfail",
        451,
        "4.7.1",
        "Later",
    )
    rcpt = await ask(chain, "accept", recipients=["bob@local.test", "refused@local.test"])
    assert (rcpt.action, rcpt.code, rcpt.enhanced, rcpt.reason) == (
        "reject",
        550,
        "5.1.1",
        "No such user here",
    )
    assert rcpt.notes["milters"][0]["at"] == "rcpt"


async def test_the_milter_sees_the_macros_and_the_whole_envelope(milter: TestMilter) -> None:
    v = await ask(MilterChain([settings(milter.address)]), "accept")
    seen = v.changes.header.split(b"X-Milter-Seen: ")[1].split(b"\r\n")[0].decode()
    assert seen == (
        "i=QID123; client=192.0.2.7; helo=client.test; from=a@client.test; "
        "to=bob@local.test,removed@local.test"
    )


async def test_every_edit_comes_back_as_changes_to_envelope_header_and_body(
    milter: TestMilter,
) -> None:
    v = await ask(MilterChain([settings(milter.address)]), "edits")
    assert v.action == "accept"
    c = v.changes
    assert c.sender == "bounces@milter.test"
    assert (c.add_recipients, c.delete_recipients) == (["added@local.test"], ["removed@local.test"])
    fields = c.header.split(b"\r\n")
    assert fields[0] == b"X-Inserted: at the top"  # inserted at index 0
    assert fields[1] == RECEIVED.rstrip()
    assert b"Subject: changed by the milter" in fields  # the folded original is gone
    assert not any(f.startswith((b"X-Remove-Me", b" folded")) for f in fields)
    assert fields[-2].startswith(b"X-Milter-Seen: ")  # appended last
    assert c.body == b"The milter wrote this body.\r\n"
    assert v.notes["milters"][0]["edits"] == [
        "add header",
        "insert header",
        "change header",
        "delete header",
        "change sender",
        "add recipient",
        "delete recipient",
        "replace body",
    ]


async def test_skip_stops_the_body_after_the_first_chunk(milter: TestMilter) -> None:
    big = b"x" * 1000 + b"\r\n"
    v = await ask(MilterChain([settings(milter.address)]), "skip", msg=message("skip", big * 200))
    assert b"\r\nX-Body-Chunks: 1\r\n" in v.changes.header  # of four


async def test_a_later_milter_sees_what_an_earlier_one_changed(milter: TestMilter) -> None:
    first = settings(milter.address, name="first")
    second = settings(milter.address, name="second")
    msg = message("edits")
    v = await ask(MilterChain([first, second]), "edits", msg=msg)
    seen = [f for f in v.changes.header.split(b"\r\n") if f.startswith(b"X-Milter-Seen")]
    assert len(seen) == 2
    assert b"from=bounces@milter.test;" in seen[1]
    assert b"added@local.test" in seen[1] and b"removed" not in seen[1]


@pytest.fixture
async def hanging() -> AsyncIterator[str]:
    """A milter that takes the connection and never answers."""
    held: list[asyncio.StreamWriter] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        await reader.read()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield f"inet:127.0.0.1:{port}"
    for w in held:
        w.close()
    server.close()


@pytest.mark.parametrize(
    ("default", "action", "code", "enhanced"),
    [
        ("tempfail", "tempfail", 451, "4.3.5"),
        ("reject", "reject", 550, "5.5.0"),
        ("accept", "accept", 0, ""),
        ("quarantine", "hold", 0, ""),
    ],
)
async def test_a_hanging_milter_gets_the_default_action_after_its_timeout(
    hanging: str, default: str, action: str, code: int, enhanced: str
) -> None:
    chain = MilterChain([settings(hanging, default_action=default, command_timeout=0.3)])
    started = asyncio.get_running_loop().time()
    v = await ask(chain, "accept")
    assert asyncio.get_running_loop().time() - started < 5
    assert (v.action, v.code, v.enhanced) == (action, code, enhanced)
    assert "no answer within 0.3s" in v.notes["milters"][0]["failed"]


async def test_a_milter_that_is_down_gets_the_default_action_and_the_next_still_runs(
    milter: TestMilter,
) -> None:
    down = settings(f"inet:127.0.0.1:{free_port()}", default_action="accept")
    v = await ask(MilterChain([down, settings(milter.address)]), "accept")
    assert v.action == "accept"
    assert "cannot connect" in v.notes["milters"][0]["failed"]
    assert b"X-Milter-Seen" in v.changes.header
    closed = MilterChain([settings(f"inet:127.0.0.1:{free_port()}")])
    assert (await ask(closed, "accept")).code == 451  # the default: tempfail


async def test_a_milter_wanting_more_than_protocol_2_offers_gets_the_default_action(
    milter: TestMilter,
) -> None:
    old = settings(milter.address, protocol=2, default_action="reject")
    v = await ask(MilterChain([old]), "accept")
    assert (v.action, v.code) == ("reject", 550)
    # purepythonmilter hangs up on an offer without the actions it needs
    assert "at negotiation" in v.notes["milters"][0]["failed"]


def test_each_protocol_version_offers_what_postfix_offers() -> None:
    assert offer(2)[0] == Action(0x1F) and int(offer(2)[1]) == 0x3F
    assert Action.QUARANTINE in offer(4)[0] and Action.CHGFROM not in offer(4)[0]
    assert int(offer(6)[0]) == 0x1FF
    with pytest.raises(ValueError):
        offer(5)
    with pytest.raises(MilterProtocolError):
        parse_negotiation(b"\0\0\0\6\0\0\0\0", 6)  # too short


def test_milter_addresses_read_like_postfix_smtpd_milters() -> None:
    assert str(MilterAddress.parse("inet:localhost:8891")) == "inet:localhost:8891"
    assert MilterAddress.parse("inet:[::1]:8891").host == "::1"
    assert MilterAddress.parse("unix:/run/opendkim/opendkim.sock").kind == "unix"
    for bad in ("8891", "inet:localhost", "tcp:1.2.3.4:25", "inet:host:99999"):
        with pytest.raises(ValueError):
            MilterAddress.parse(bad)


def test_header_edits_follow_sendmail_positions_and_keep_crlf() -> None:
    msg = b"A: 1\r\nB: first\r\nB: second\r\n folded\r\nC: 3\r\n\r\nbody\r\n"
    state = MessageState.parse("s@x", ["r@y"], msg)
    state.change_header(2, b"b", b"new\n\tline")
    state.change_header(0, b"A", b"")  # 0 counts as 1; an empty value deletes
    state.insert_header(1, b"I", b"inserted")
    state.change_header(5, b"Z", b"added past the end")
    header, body = split_message(state.message())
    assert header == (
        b"B: first\r\nI: inserted\r\nB: new\r\n\tline\r\nC: 3\r\nZ: added past the end\r\n"
    )
    assert body == b"body\r\n"
    assert join_message(header, body) == state.message()
