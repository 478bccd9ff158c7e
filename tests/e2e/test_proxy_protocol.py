"""PROXY protocol through the running services: v1 and v2 headers from the load
balancer's network set the client address that ``Received:`` and relay control
see; a header from anywhere else is refused."""

from __future__ import annotations

import ipaddress
import socket
import ssl
import struct

from support.dnsserver import free_port
from support.mua import PASSWORD, add_user, plain, tls_client
from support.smtpsink import SmtpSink

SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def v2_header(src: str, dst: str, sport: int, dport: int) -> bytes:
    a, b = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    family = 0x11 if a.version == 4 else 0x21
    body = a.packed + b.packed + struct.pack("!HH", sport, dport)
    return SIGNATURE + bytes((0x21, family)) + struct.pack("!H", len(body)) + body


class Raw:
    def __init__(self, sock: socket.socket) -> None:
        self.sock, self.file = sock, sock.makefile("rb")

    def reply(self) -> bytes:
        out = b""
        while True:
            line = self.file.readline()
            if not line:
                raise ConnectionError(out)
            out += line
            if line[3:4] != b"-":
                return out

    def cmd(self, line: bytes) -> bytes:
        self.sock.sendall(line + b"\r\n")
        return self.reply()


def proxied_stack(stack_factory, sink: SmtpSink, networks: list[str]):  # type: ignore[no-untyped-def]
    sub, subs = free_port(), free_port()
    stack = stack_factory(
        {
            "ingress": {
                "proxy_protocol": True,
                "proxy_networks": networks,
                "auth_failure_delay": 0.0,
                "listeners": [
                    {"address": f"127.0.0.1:{sub}", "role": "submission"},
                    {"address": f"127.0.0.1:{subs}", "role": "submissions", "proxy_protocol": True},
                ],
            },
            "transport": {"routes": {"remote.test": f"smtp:[127.0.0.1]:{sink.port}"}},
        }
    )
    return stack, sub, subs


MESSAGE = b"From: a@client.test\r\nTo: bob@local.test\r\nSubject: via lb\r\n\r\nhi\r\n.\r\n"


def test_a_v1_header_sets_the_client_for_received_and_relay_control(
    stack_factory, make_sink, wait_for_maildir
):
    stack, _, _ = proxied_stack(stack_factory, make_sink(), ["127.0.0.0/8"])
    with socket.create_connection(("127.0.0.1", stack.smtp_port), timeout=20) as s:
        c = Raw(s)
        s.sendall(b"PROXY TCP4 203.0.113.9 127.0.0.1 40000 25\r\n")
        assert c.reply()[:3] == b"220"
        c.cmd(b"EHLO client.test")
        assert c.cmd(b"MAIL FROM:<a@client.test>")[:3] == b"250"
        # 127.0.0.1 (the balancer) is trusted; 203.0.113.9 (the client) is not
        assert c.cmd(b"RCPT TO:<dan@remote.test>")[:9] == b"554 5.7.1"
        assert c.cmd(b"RCPT TO:<bob@local.test>")[:3] == b"250"
        assert c.cmd(b"DATA")[:3] == b"354"
        s.sendall(MESSAGE)
        assert c.reply()[:3] == b"250"
    got = wait_for_maildir(stack.workdir / "var" / "mail", "bob@local.test")[0]
    assert "[203.0.113.9]" in got["Received"] and "127.0.0.1" not in got["Received"]


def test_a_v2_header_before_implicit_tls_sets_an_ipv6_client(stack_factory, make_sink):
    sink = make_sink()
    stack, _, subs = proxied_stack(stack_factory, sink, ["127.0.0.0/8"])
    add_user(stack, "alice@local.test")
    raw = socket.create_connection(("127.0.0.1", subs), timeout=20)
    # the header and the TLS ClientHello in one segment, as a balancer may send them
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = tls_client().wrap_bio(incoming, outgoing, server_side=False)
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:
        pass
    raw.sendall(v2_header("2001:db8::7", "2001:db8::1", 40001, 465) + outgoing.read())
    # finish the handshake over the socket, then speak SMTP inside TLS
    while True:
        try:
            tls.do_handshake()
            break
        except ssl.SSLWantReadError:
            raw.sendall(outgoing.read())
            data = raw.recv(65536)
            assert data, "closed during the handshake"
            incoming.write(data)
    raw.sendall(outgoing.read())

    def send(line: bytes) -> None:
        tls.write(line)
        raw.sendall(outgoing.read())

    def reply() -> bytes:
        out = b""
        while not (out.endswith(b"\r\n") and out.split(b"\r\n")[-2][3:4] == b" "):
            try:
                out += tls.read(65536)
            except ssl.SSLWantReadError:
                incoming.write(raw.recv(65536))
        return out

    assert reply()[:3] == b"220"
    send(b"EHLO mua.test\r\n")
    assert b"AUTH PLAIN LOGIN" in reply()
    send(b"AUTH PLAIN " + plain("alice@local.test", PASSWORD).encode() + b"\r\n")
    assert reply()[:3] == b"235"
    for line in (b"MAIL FROM:<alice@local.test>", b"RCPT TO:<dan@remote.test>", b"DATA"):
        send(line + b"\r\n")
        assert reply()[:1] in (b"2", b"3")
    send(MESSAGE.replace(b"a@client.test", b"alice@local.test"))
    assert reply()[:3] == b"250"
    raw.close()
    received = sink.wait_for(1)[0].content.split(b"\r\n\r\n")[0]
    assert b"[2001:db8::7]" in received and b"ESMTPSA" in received


def test_a_header_from_outside_the_balancer_networks_is_refused(stack_factory, make_sink):
    stack, sub, _ = proxied_stack(stack_factory, make_sink(), ["192.0.2.0/24"])
    with socket.create_connection(("127.0.0.1", stack.smtp_port), timeout=20) as s:
        s.sendall(b"PROXY TCP4 203.0.113.9 127.0.0.1 40000 25\r\n")
        c = Raw(s)
        assert c.reply()[:9] == b"421 4.7.0"
        try:
            assert s.recv(100) == b""  # closed
        except ConnectionResetError:
            pass  # closed with the header unread: a reset
    # a listener without PROXY protocol takes the header for an unknown command
    with socket.create_connection(("127.0.0.1", sub), timeout=20) as s:
        c = Raw(s)
        assert c.reply()[:3] == b"220"
        assert c.cmd(b"PROXY TCP4 203.0.113.9 127.0.0.1 40000 25")[:3] == b"500"


def send_via_balancer(port: int, client_ip: str) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        c = Raw(s)
        s.sendall(f"PROXY TCP4 {client_ip} 127.0.0.1 40000 25\r\n".encode())
        assert c.reply()[:3] == b"220"
        c.cmd(b"EHLO client.test")
        assert c.cmd(b"MAIL FROM:<a@client.test>")[:3] == b"250"
        assert c.cmd(b"RCPT TO:<bob@local.test>")[:3] == b"250"
        assert c.cmd(b"DATA")[:3] == b"354"
        s.sendall(MESSAGE)
        assert c.reply()[:3] == b"250"


def test_the_client_is_named_by_forward_confirmed_reverse_dns(
    stack_factory, make_sink, dns_server, wait_for_maildir
):
    dns_server.add("9.113.0.203.in-addr.arpa", "PTR", "mail.client.test.")
    dns_server.add("mail.client.test", "A", "203.0.113.9")
    # a PTR record whose name does not lead back is not believed
    dns_server.add("10.113.0.203.in-addr.arpa", "PTR", "bank.example.")
    dns_server.add("bank.example", "A", "192.0.2.99")
    stack, _, _ = proxied_stack(stack_factory, make_sink(), ["127.0.0.0/8"])
    send_via_balancer(stack.smtp_port, "203.0.113.9")
    send_via_balancer(stack.smtp_port, "203.0.113.10")
    got = wait_for_maildir(stack.workdir / "var" / "mail", "bob@local.test", count=2)
    received = sorted(m["Received"].split(")")[0] for m in got)
    assert received == [
        "from client.test (mail.client.test [203.0.113.9]",
        "from client.test (unknown [203.0.113.10]",
    ]
