"""BDAT through the running services: several chunks, LAST, pipelined, stored in
JetStream and delivered to the next server byte for byte."""

from __future__ import annotations

import socket

from support.smtpsink import SmtpSink

BODY = (
    b"From: a@client.test\r\nTo: dan@remote.test\r\nSubject: chunked\r\n\r\n"
    + b".a line with a leading dot\r\n..two dots\r\n\xc3\xa9t\xc3\xa9\r\n"
    + (b"x" * 900 + b"\r\n") * 5
)


def replies(f, count: int) -> list[bytes]:  # type: ignore[no-untyped-def]
    out = []
    for _ in range(count):
        reply = b""
        while True:
            line = f.readline()
            assert line, reply
            reply += line
            if line[3:4] != b"-":
                break
        out.append(reply)
    return out


def test_pipelined_bdat_chunks_are_delivered_byte_for_byte(stack_factory, make_sink):
    sink: SmtpSink = make_sink()
    stack = stack_factory(
        {"transport": {"routes": {"remote.test": f"smtp:[127.0.0.1]:{sink.port}"}}}
    )
    cuts = [0, 7, 100, 2000, len(BODY)]
    wire = b"EHLO client.test\r\nMAIL FROM:<a@client.test> BODY=8BITMIME\r\nRCPT TO:<dan@remote.test>\r\n"
    for i, (start, end) in enumerate(zip(cuts, cuts[1:], strict=False)):
        last = b" LAST" if i == len(cuts) - 2 else b""
        wire += b"BDAT %d%s\r\n" % (end - start, last) + BODY[start:end]
    with socket.create_connection(("127.0.0.1", stack.smtp_port), timeout=20) as s:
        f = s.makefile("rb")
        assert replies(f, 1)[0][:3] == b"220"
        s.sendall(wire)  # every command and chunk in one write
        got = replies(f, 3 + len(cuts) - 1)
        s.sendall(b"QUIT\r\n")
    assert b"CHUNKING" in got[0]
    assert all(r[:3] == b"250" for r in got), [r[-60:] for r in got]
    assert got[-1].startswith(b"250 2.0.0 Ok: queued as ")
    delivered = sink.wait_for(1)[0].content
    assert delivered.endswith(BODY)
    trace = delivered[: -len(BODY)]
    assert trace.startswith(b"Received: ") and trace.count(b"Received: ") == 1
