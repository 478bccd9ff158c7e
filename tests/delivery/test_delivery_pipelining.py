"""PIPELINING and CHUNKING (BDAT) towards peers that offer them.

aiosmtpd offers neither, so the peer here is a small asyncio SMTP server that
does: it records every packet it reads (to see what came together) and every
message with how it came (DATA or BDAT), and can answer each pipelined reply
in a packet of its own.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from delivery_harness import BODY, Harness

from elemta.common.envelope import Envelope, new_queue_id
from elemta.common.jetstream import ENVELOPE_HEADER, MESSAGES_STREAM, first_consumer_config


class Peer:
    def __init__(
        self, chunking: bool, split_replies: bool = False, hang_up_after_message: bool = False
    ) -> None:
        self.chunking = chunking
        self.split_replies = split_replies
        self.hang_up_after_message = hang_up_after_message
        self.connections = 0
        self.packets: list[bytes] = []
        self.messages: list[tuple[str, list[str], bytes]] = []
        self.refuse = {"<nobody@example.test>"}
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._session, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        carried = False
        buf = b""
        rcpts: list[str] = []

        async def reply(text: str) -> None:
            writer.write(text.encode() + b"\r\n")
            if self.split_replies:
                await writer.drain()
                await asyncio.sleep(0.01)

        async def more() -> bool:
            nonlocal buf
            data = await reader.read(65536)
            if data:
                self.packets.append(data)
            buf += data
            return bool(data)

        await reply("220 peer.test ESMTP")
        await writer.drain()
        try:
            while True:
                while b"\r\n" not in buf:
                    if not await more():
                        return
                line, buf = buf.split(b"\r\n", 1)
                verb = line[:4].upper()
                if verb == b"EHLO":
                    ext = ["PIPELINING", "8BITMIME", "SIZE 10000000"]
                    ext += ["CHUNKING"] if self.chunking else []
                    await reply(
                        "250-peer.test\r\n"
                        + "\r\n".join(f"250-{e}" for e in ext[:-1])
                        + f"\r\n250 {ext[-1]}"
                    )
                elif verb == b"MAIL":
                    if carried and self.hang_up_after_message:
                        return  # one message per connection, said by hanging up
                    rcpts = []
                    await reply("250 2.1.0 OK")
                elif verb == b"RCPT":
                    addr = line[8:].split(b" ")[0].decode()
                    if addr in self.refuse:
                        await reply("550 5.1.1 no such user")
                    else:
                        rcpts.append(addr.strip("<>"))
                        await reply("250 2.1.5 OK")
                elif verb == b"DATA":
                    if not rcpts:
                        await reply("554 5.5.1 no valid recipients")
                        continue
                    await reply("354 go ahead")
                    await writer.drain()
                    while b"\r\n.\r\n" not in b"\r\n" + buf:
                        if not await more():
                            return
                    data, buf = (b"\r\n" + buf).split(b"\r\n.\r\n", 1)
                    data = data.replace(b"\r\n..", b"\r\n.")  # dot-unstuffing
                    self.messages.append(("DATA", rcpts, data[2:] + b"\r\n"))
                    await reply("250 2.0.0 queued")
                    carried = True
                elif verb == b"BDAT":
                    size = int(line.split()[1])
                    while len(buf) < size:
                        if not await more():
                            return
                    data, buf = buf[:size], buf[size:]
                    self.messages.append(("BDAT", rcpts, data))
                    await reply("250 2.0.0 queued")
                elif verb == b"QUIT":
                    await reply("221 bye")
                    await writer.drain()
                    return
                else:
                    await reply("250 2.0.0 OK")
                await writer.drain()
        finally:
            writer.close()


@pytest.fixture
async def peers() -> AsyncIterator[list[Peer]]:
    made: list[Peer] = []
    yield made
    for p in made:
        await p.stop()


async def start_peer(peers: list[Peer], **kwargs: bool) -> Peer:
    peer = Peer(**kwargs)
    await peer.start()
    peers.append(peer)
    return peer


async def test_mail_rcpt_and_data_go_out_in_one_packet_to_a_pipelining_peer(
    harness: Harness, peers: list[Peer]
) -> None:
    peer = await start_peer(peers, chunking=False)
    await harness.start()
    rcpts = ["bob@example.test", "nobody@example.test", "carol@example.test"]
    qid = await harness.submit(f"smtp:[127.0.0.1]:{peer.port}", rcpts)

    results = (await harness.outcome(qid)).results
    assert [(r.status, r.code) for r in results] == [
        ("delivered", 250),
        ("failed", 550),
        ("delivered", 250),
    ]
    transaction = next(p for p in peer.packets if p.startswith(b"MAIL FROM:"))
    assert transaction.count(b"\r\n") == 5 and transaction.endswith(b"DATA\r\n")
    assert peer.messages == [("DATA", ["bob@example.test", "carol@example.test"], BODY)]


async def test_replies_arriving_one_by_one_are_all_read(
    harness: Harness, peers: list[Peer]
) -> None:
    peer = await start_peer(peers, chunking=False, split_replies=True)
    await harness.start()
    rcpts = [f"user{i}@example.test" for i in range(20)] + ["nobody@example.test"]
    qid = await harness.submit(f"smtp:[127.0.0.1]:{peer.port}", rcpts)

    results = (await harness.outcome(qid)).results
    assert [r.status for r in results] == ["delivered"] * 20 + ["failed"]
    assert len(peer.messages) == 1


async def test_a_chunking_peer_gets_the_message_in_one_bdat_without_dot_stuffing(
    harness: Harness, peers: list[Peer]
) -> None:
    peer = await start_peer(peers, chunking=True)
    await harness.start()
    qid = await harness.submit(f"smtp:[127.0.0.1]:{peer.port}", ["bob@example.test"])

    assert (await harness.outcome(qid)).results[0].status == "delivered"
    assert peer.messages == [("BDAT", ["bob@example.test"], BODY)]
    assert b"\r\n.a line that starts with a dot\r\n" in BODY
    assert any(p.startswith(b"BDAT %d LAST\r\n" % len(BODY)) for p in peer.packets)


async def test_with_no_recipient_accepted_no_message_is_sent(
    harness: Harness, peers: list[Peer]
) -> None:
    peer = await start_peer(peers, chunking=True)
    await harness.start()
    qid = await harness.submit(f"smtp:[127.0.0.1]:{peer.port}", ["nobody@example.test"])

    [result] = (await harness.outcome(qid)).results
    assert (result.status, result.code) == ("failed", 550)
    assert peer.messages == []


async def test_a_session_reused_at_once_after_a_message_needs_no_rset(
    harness: Harness, peers: list[Peer]
) -> None:
    peer = await start_peer(peers, chunking=False)
    await harness.start()
    route = f"smtp:[127.0.0.1]:{peer.port}"
    for rcpt in ["bob@example.test", "carol@example.test"]:
        qid = await harness.submit(route, [rcpt])
        assert (await harness.outcome(qid)).results[0].status == "delivered"

    assert len(peer.messages) == 2
    assert peer.connections == 1
    assert not any(p.upper().startswith(b"RSET") for p in peer.packets)


async def test_a_peer_that_hangs_up_on_a_second_message_gets_it_on_a_new_connection(
    harness: Harness, peers: list[Peer]
) -> None:
    peer = await start_peer(peers, chunking=False, hang_up_after_message=True)
    await harness.start()
    route = f"smtp:[127.0.0.1]:{peer.port}"
    for rcpt in ["bob@example.test", "carol@example.test", "dave@example.test"]:
        qid = await harness.submit(route, [rcpt])
        [result] = (await harness.outcome(qid)).results
        assert (result.status, result.code) == ("delivered", 250)

    assert [m[1] for m in peer.messages] == [
        ["bob@example.test"],
        ["carol@example.test"],
        ["dave@example.test"],
    ]
    assert peer.connections == 3


async def test_a_wire_ready_message_goes_out_on_data_exactly_as_stored(
    harness: Harness, peers: list[Peer]
) -> None:
    """Ingress found CRLF lines only and none beginning with ".": DATA sends the
    stored bytes as they are (8-bit and all), and the peer gets them exactly."""
    peer = await start_peer(peers, chunking=False)
    await harness.start()
    body = (
        b"Subject: caf\xc3\xa9\r\n\r\n8-bit \xc3\xa9t\xc3\xa9, a dot . inside a line.\r\n"
        + (b"x" * 998 + b"\r\n") * 100
    )
    route = f"smtp:[127.0.0.1]:{peer.port}"
    qid = await harness.submit(route, ["bob@example.test"], body=body, wire_ready=True)

    assert (await harness.outcome(qid)).results[0].status == "delivered"
    assert peer.messages == [("DATA", ["bob@example.test"], body)]
    assert b"\r\n" + body + b".\r\n" in b"".join(peer.packets)


async def test_a_first_attempt_sends_what_ingress_stored_byte_for_byte_ready_or_not(
    harness: Harness, peers: list[Peer]
) -> None:
    """The envelope's ``wire_ready`` reaches the first attempt; a message without it
    (here with dot lines, a line of exactly "." and 8-bit text) is dot-stuffed as ever."""
    peer = await start_peer(peers, chunking=False)
    cfg = harness.config()
    routes = {"example.test": f"smtp:[127.0.0.1]:{peer.port}"}
    cfg = cfg.model_copy(update={"transport": cfg.transport.model_copy(update={"routes": routes})})
    await harness.js.add_consumer(MESSAGES_STREAM, first_consumer_config(cfg))
    await harness.start(cfg)
    ready = b"Subject: ready\r\n\r\n\xc3\xa9t\xc3\xa9 and a dot . inside\r\n" * 50
    dotted = b"Subject: dotted\r\n\r\n.leading\r\n.\r\n..two\r\n\xc3\xa9t\xc3\xa9\r\n" * 50
    for body, wire_ready in ((ready, True), (dotted, False)):
        env = Envelope(
            new_queue_id(),
            "alice@sender.test",
            ["bob@example.test"],
            time.time(),
            size=len(body),
            body_8bit=True,
            wire_ready=wire_ready,
        )
        await harness.js.publish(
            f"elemta.msg.{env.id}", body, headers={ENVELOPE_HEADER: env.to_header()}
        )
    deadline = time.monotonic() + 15
    while len(peer.messages) < 2:
        assert time.monotonic() < deadline, peer.messages
        await asyncio.sleep(0.05)
    assert sorted(m[2] for m in peer.messages) == sorted([ready, dotted])
