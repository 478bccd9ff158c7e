"""Per-client limits through two running ingress processes: open connections,
connections, messages and recipients per minute, counted for both in JetStream
KV, each answered with its code."""

from __future__ import annotations

import smtplib
import socket

UNTRUSTED = {"trusted_networks": ["10.0.0.0/8"]}  # 127.0.0.1 is an outside client here


def greeting(port: int) -> tuple[socket.socket, bytes]:
    s = socket.create_connection(("127.0.0.1", port), timeout=20)
    return s, s.makefile("rb").readline()


def test_open_connections_are_limited_across_two_ingress_processes(stack_factory):
    stack = stack_factory({"server": UNTRUSTED, "ingress": {"client_connection_limit": 2}})
    _, other = stack.add_ingress()
    first, hello = greeting(stack.smtp_port)
    assert hello.startswith(b"220")
    second, hello = greeting(other)
    assert hello.startswith(b"220")
    third, refused = greeting(stack.smtp_port)
    assert refused.startswith(b"421 4.7.0") and b"too many connections" in refused
    fourth, refused = greeting(other)
    assert refused.startswith(b"421 4.7.0")
    for s in (third, fourth):
        s.close()
    first.sendall(b"QUIT\r\n")
    first.makefile("rb").read()  # the server closes: the slot is given back
    first.close()
    # the slot comes back once the closing process has written it back
    for _ in range(100):
        s, hello = greeting(other)
        s.close()
        if hello.startswith(b"220"):
            break
    assert hello.startswith(b"220"), hello
    second.close()


def test_a_busy_client_within_the_limit_is_never_refused(stack_factory):
    """Many short connections at once from one client: each slot is given back,
    however the writes of the count collide, so the client is never told 421."""
    from concurrent.futures import ThreadPoolExecutor

    stack = stack_factory({"server": UNTRUSTED, "ingress": {"client_connection_limit": 12}})

    def session(_: int) -> bytes:
        s, hello = greeting(stack.smtp_port)
        try:
            s.sendall(b"QUIT\r\n")
            s.makefile("rb").read()
        finally:
            s.close()
        return hello

    with ThreadPoolExecutor(8) as pool:
        greetings = list(pool.map(session, range(400)))
    assert [g for g in greetings if not g.startswith(b"220")] == []
    with ThreadPoolExecutor(8) as pool:  # and the slots are all back
        assert all(g.startswith(b"220") for g in pool.map(session, range(40)))


def test_connection_message_and_recipient_rates_answer_with_their_codes(stack_factory):
    stack = stack_factory(
        {
            "server": UNTRUSTED,
            "ingress": {
                "client_connection_rate": 3,
                "client_message_rate": 2,
                "client_recipient_rate": 3,
            },
        }
    )
    _, other = stack.add_ingress()
    with smtplib.SMTP("127.0.0.1", stack.smtp_port, local_hostname="c.test", timeout=20) as s:
        s.ehlo()
        assert s.mail("a@client.test")[0] == 250
        assert [s.rcpt(f"r{i}@local.test")[0] for i in range(4)] == [250, 250, 250, 450]
        code, text = s.rcpt("r9@local.test")
        assert (code, text[:5]) == (450, b"4.7.1") and b"too many recipients" in text
        s.rset()
        assert s.mail("a@client.test")[0] == 250  # the second message of the minute
        s.rset()
        code, text = s.mail("a@client.test")
        assert (code, text[:5]) == (450, b"4.7.1") and b"too many messages" in text
    for port in (other, stack.smtp_port):  # connections 2 and 3 of the minute
        with smtplib.SMTP("127.0.0.1", port, local_hostname="c.test", timeout=20) as s:
            assert s.noop()[0] == 250
    s4, refused = greeting(other)
    s4.close()
    assert refused.startswith(b"421 4.7.0") and b"per minute" in refused


def test_trusted_networks_are_not_limited(stack_factory):
    stack = stack_factory({"ingress": {"client_connection_limit": 1}})
    held, hello = greeting(stack.smtp_port)
    assert hello.startswith(b"220")
    other, hello = greeting(stack.smtp_port)
    assert hello.startswith(b"220")
    held.close()
    other.close()


def test_clients_that_hang_up_at_once_give_their_slots_back(stack_factory):
    stack = stack_factory({"server": UNTRUSTED, "ingress": {"client_connection_limit": 2}})
    # Each of these is gone before its slot is granted: the slot must still be
    # given back, or the client address is locked out for as long as ingress runs.
    for _ in range(300):
        s = socket.create_connection(("127.0.0.1", stack.smtp_port), timeout=20)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.close()  # RST right after the handshake
    # slots come back once ingress has written them back
    for _ in range(100):
        s, hello = greeting(stack.smtp_port)
        s.close()
        if hello.startswith(b"220"):
            break
    assert hello.startswith(b"220"), hello
    first, hello = greeting(stack.smtp_port)
    second, hello2 = greeting(stack.smtp_port)
    assert hello.startswith(b"220") and hello2.startswith(b"220"), (hello, hello2)
    first.close()
    second.close()
