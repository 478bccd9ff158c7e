"""CHUNKING (RFC 3030) on the ingress: BDAT chunks read by count, stored byte for
byte, and the same limits and smuggling safety as DATA."""

from __future__ import annotations

from ingress_harness import RawSMTP, message_count, queue_id_of, stored

BODY = b"From: a@client.test\r\nSubject: chunks\r\n\r\n.a line with a leading dot\r\n\xc3\xa9\r\n"


def chunk(c: RawSMTP, data: bytes, last: bool = False, size: int | None = None) -> bytes:
    c.send(
        b"BDAT %d%s\r\n" % (len(data) if size is None else size, b" LAST" if last else b"") + data
    )
    return c.reply()


def greet(c: RawSMTP) -> None:
    assert c.reply()[:3] == b"220"
    assert b"CHUNKING" in c.cmd(b"EHLO client.test")


def test_pipelined_chunks_are_stored_byte_for_byte(ingress, shared_nats):
    with RawSMTP(ingress.port) as c:
        greet(c)
        first, second, third = BODY[:10], BODY[10:40], BODY[40:]
        c.send(
            b"MAIL FROM:<a@client.test>\r\nRCPT TO:<b@local.test>\r\n"
            + b"BDAT %d\r\n" % len(first) + first
            + b"BDAT %d\r\n" % len(second) + second
            + b"BDAT %d LAST\r\n" % len(third) + third
        )  # fmt: skip
        replies = [c.reply() for _ in range(5)]
    assert [r[:3] for r in replies] == [b"250"] * 5
    assert replies[2] == b"250 2.0.0 10 octets received\r\n"
    got = stored(shared_nats.url, queue_id_of(replies[4]))
    assert got is not None
    head, _, rest = got.data.partition(b"\r\n\tfor <b@local.test>;")
    assert head.startswith(b"Received: ") and b"with ESMTP" in head
    assert rest.split(b"\r\n", 1)[1] == BODY  # no dot-unstuffing, nothing changed


def test_an_empty_last_chunk_ends_the_message_and_crlf_is_added(ingress, shared_nats):
    with RawSMTP(ingress.port) as c:
        greet(c)
        c.cmd(b"MAIL FROM:<a@client.test>")
        c.cmd(b"RCPT TO:<b@local.test>")
        c.send(b"BDAT 12\r\nSubject: x\r\n")
        assert c.reply()[:3] == b"250"
        c.send(b"BDAT 7\r\n\r\nbody!")
        assert c.reply()[:3] == b"250"
        reply = c.cmd(b"BDAT 0 LAST")
        assert reply[:3] == b"250", reply
    got = stored(shared_nats.url, queue_id_of(reply))
    assert got is not None and got.data.endswith(b"\r\nSubject: x\r\n\r\nbody!\r\n")


def test_chunks_without_a_transaction_are_read_and_refused(ingress):
    with RawSMTP(ingress.port) as c:
        greet(c)
        # the chunk's octets look like commands: they must be read as data
        assert chunk(c, b"QUIT\r\n")[:9] == b"503 5.5.1"
        c.cmd(b"MAIL FROM:<a@client.test>")
        assert chunk(c, b"RSET\r\n", last=True)[:9] == b"503 5.5.1"
        assert c.cmd(b"NOOP") == b"250 2.0.0 Ok\r\n"


def test_bare_newlines_in_chunks_are_refused_like_data(ingress, shared_nats):
    before = message_count(shared_nats.url)
    with RawSMTP(ingress.port) as c:
        greet(c)
        c.cmd(b"MAIL FROM:<a@client.test>")
        c.cmd(b"RCPT TO:<b@local.test>")
        body = b"Subject: x\r\n\r\nhidden\n.\nMAIL FROM:<x@y>\r\n"
        reply = chunk(c, body, last=True)
        assert reply.startswith(b"550 5.6.11")
        assert c.cmd(b"NOOP") == b"250 2.0.0 Ok\r\n"
    assert message_count(shared_nats.url) == before


def test_chunks_over_the_size_limit_are_dropped_and_refused_at_last(ingress_factory, shared_nats):
    runner = ingress_factory({"ingress": {"max_message_size": 2048}})
    before = message_count(shared_nats.url)
    with RawSMTP(runner.port) as c:
        greet(c)
        c.cmd(b"MAIL FROM:<a@client.test>")
        c.cmd(b"RCPT TO:<b@local.test>")
        assert chunk(c, b"x" * 1998 + b"\r\n")[:3] == b"250"
        assert chunk(c, b"y" * 3000)[:3] == b"250"  # read, not kept
        assert chunk(c, b"\r\n", last=True).startswith(b"552 5.3.4")
        assert c.cmd(b"DATA")[:9] == b"503 5.5.1"  # the transaction ended
    assert message_count(shared_nats.url) == before


def test_data_after_a_chunk_and_a_bad_size_are_refused(ingress):
    with RawSMTP(ingress.port) as c:
        greet(c)
        c.cmd(b"MAIL FROM:<a@client.test>")
        c.cmd(b"RCPT TO:<b@local.test>")
        assert chunk(c, b"abc")[:3] == b"250"
        assert c.cmd(b"DATA")[:9] == b"503 5.5.1"
        assert c.cmd(b"BDAT ten")[:9] == b"421 4.5.4"
        assert c.closed()
