"""Final delivery: LMTP to a mail store and Maildir on local disk."""

from __future__ import annotations

import asyncio
from pathlib import Path

from delivery_harness import BODY, Harness, metric

from support.smtpsink import SmtpSink


async def test_lmtp_delivery_reports_each_recipient_on_its_own(
    harness: Harness, lmtp_sink: SmtpSink
) -> None:
    store = lmtp_sink
    store.rcpt_replies["ghost@local.test"] = "550 5.1.1 No such mailbox"
    await harness.start()
    qid = await harness.submit(
        f"lmtp:127.0.0.1:{store.port}", ["bob@local.test", "ghost@local.test", "carol@local.test"]
    )

    outcome = await harness.outcome(qid)
    assert outcome.host == f"127.0.0.1[127.0.0.1]:{store.port}"
    assert [(r.recipient, r.status, r.code, r.enhanced) for r in outcome.results] == [
        ("bob@local.test", "delivered", 250, "2.0.0"),
        ("ghost@local.test", "failed", 550, "5.1.1"),
        ("carol@local.test", "delivered", 250, "2.0.0"),
    ]
    assert outcome.results[1].text == "No such mailbox"
    [received] = store.wait_for(1)
    assert received.mail_from == "alice@sender.test"
    assert received.rcpt_tos == ["bob@local.test", "carol@local.test"]
    assert received.content == BODY  # dot-stuffing undone by the server


async def test_lmtp_sessions_are_reused(harness: Harness, lmtp_sink: SmtpSink) -> None:
    store = lmtp_sink
    await harness.start()
    opened = metric("elemta_delivery_connections_opened_total")
    for rcpt in ("one@local.test", "two@local.test"):
        qid = await harness.submit(f"lmtp:127.0.0.1:{store.port}", [rcpt])
        assert (await harness.outcome(qid)).results[0].status == "delivered"
    assert metric("elemta_delivery_connections_opened_total") - opened == 1


async def test_maildir_delivery_writes_one_file_per_recipient_into_new(
    harness: Harness, tmp_path: Path
) -> None:
    root = tmp_path / "mail"
    await harness.start(maildir_root=str(root))
    qid = await harness.submit("local", ["Bob@Local.Test", "carol@local.test"])

    outcome = await harness.outcome(qid)
    assert outcome.host == "maildir"
    assert [(r.status, r.code, r.enhanced) for r in outcome.results] == [
        ("delivered", 250, "2.0.0")
    ] * 2
    for user, rcpt in (("bob", "Bob@Local.Test"), ("carol", "carol@local.test")):
        box = root / "local.test" / user
        assert sorted(p.name for p in box.iterdir()) == ["cur", "new", "tmp"]
        assert list((box / "tmp").iterdir()) == []
        [stored] = list((box / "new").iterdir())
        data = stored.read_bytes()
        assert data.startswith(
            b"Return-Path: <alice@sender.test>\nDelivered-To: " + rcpt.encode() + b"\n"
        )
        assert data.endswith(BODY.replace(b"\r\n", b"\n"))
        assert stored.stat().st_mode & 0o777 == 0o600


async def test_maildir_refuses_mailbox_names_that_leave_the_root(
    harness: Harness, tmp_path: Path
) -> None:
    root = tmp_path / "mail"
    await harness.start(maildir_root=str(root))
    qid = await harness.submit(
        "local", ["../../etc@local.test", "ok@local.test"], domain="local.test"
    )

    bad, ok = (await harness.outcome(qid)).results
    assert (bad.status, bad.enhanced) == ("failed", "5.1.3")
    assert ok.status == "delivered"
    assert not (tmp_path / "etc").exists()


class PipeliningLmtpServer:
    """Scripted LMTP server offering PIPELINING; notes whether RCPT TO came with MAIL FROM."""

    def __init__(self) -> None:
        self.pipelined: list[bool] = []
        self.bodies: list[bytes] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 store.test LMTP\r\n")
        accepted: list[bytes] = []
        while line := await reader.readline():
            verb = line[:4].upper()
            replies: list[bytes] = []
            if verb == b"LHLO":
                replies.append(b"250-store.test\r\n250-PIPELINING\r\n250 ENHANCEDSTATUSCODES\r\n")
            elif verb == b"MAIL":
                accepted = []
                replies.append(b"250 2.1.0 OK\r\n")
                try:  # a pipelining client sends RCPT TO without waiting for this reply
                    line = await asyncio.wait_for(reader.readline(), 0.3)
                    self.pipelined.append(True)
                except TimeoutError:
                    self.pipelined.append(False)
                    writer.write(replies.pop())
                    line = await reader.readline()
                verb = line[:4].upper()
            if verb == b"RCPT":
                while verb == b"RCPT":
                    if b"ghost" in line:
                        replies.append(b"550 5.1.1 no such mailbox\r\n")
                    else:
                        accepted.append(line)
                        replies.append(b"250 2.1.5 OK\r\n")
                    writer.write(b"".join(replies))
                    replies = []
                    try:
                        line = await asyncio.wait_for(reader.readline(), 0.1)
                    except TimeoutError:
                        line = await reader.readline()
                    verb = line[:4].upper()
            if verb == b"DATA":
                writer.write(b"354 go ahead\r\n")
                body = b""
                while not body.endswith(b"\r\n.\r\n"):
                    body += await reader.readline()
                self.bodies.append(body)
                replies.extend(b"250 2.0.0 saved\r\n" for _ in accepted)
            elif verb == b"QUIT":
                writer.write(b"221 bye\r\n")
                break
            elif verb not in (b"LHLO", b"MAIL", b"RCPT"):
                replies.append(b"250 2.0.0 OK\r\n")
            writer.write(b"".join(replies))
            await writer.drain()
        writer.close()


async def test_lmtp_commands_are_pipelined_when_the_server_offers_pipelining(
    harness: Harness,
) -> None:
    server = PipeliningLmtpServer()
    listener = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    try:
        await harness.start()
        qid = await harness.submit(
            f"lmtp:127.0.0.1:{port}", ["bob@local.test", "ghost@local.test", "carol@local.test"]
        )
        outcome = await harness.outcome(qid)
    finally:
        listener.close()
    assert [(r.status, r.code) for r in outcome.results] == [
        ("delivered", 250),
        ("failed", 550),
        ("delivered", 250),
    ]
    assert server.pipelined == [True]
    assert server.bodies[0].endswith(b"\r\n..a line that starts with a dot\r\nbye\r\n.\r\n")
