"""A real authoritative DNS server on loopback (UDP and TCP) serving test zones.

Records are added as zone-file text; the server answers with the AA bit, NXDOMAIN
for names it does not know and NOERROR with no answer for a known name without
the asked type. Lookups from the services go over the wire like any other DNS.
"""

from __future__ import annotations

import socket
import socketserver
import struct
import threading
from typing import TYPE_CHECKING

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import dns.zone

if TYPE_CHECKING:
    from .dnssec import SignedZone

__all__ = ["DnsServer"]


class DnsServer:
    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.records: dict[tuple[dns.name.Name, int], dns.rrset.RRset] = {}
        self.names: set[dns.name.Name] = set()
        self.silent: set[dns.name.Name] = set()  # names (and below) never answered
        self.signed: list[SignedZone] = []  # answered with DNSSEC records
        self.queries = 0
        self._lock = threading.Lock()
        self._udp: socketserver.UDPServer | None = None
        self._tcp: socketserver.TCPServer | None = None
        self.port = 0

    def add_zone(self, origin: str, text: str) -> None:
        """Add records in zone-file syntax; names are relative to ``origin``."""
        zone = dns.zone.from_text(text, origin=origin, relativize=False, check_origin=False)
        with self._lock:
            for name, node in zone.nodes.items():
                for rdataset in node.rdatasets:
                    rrset = dns.rrset.RRset(name, rdataset.rdclass, rdataset.rdtype)
                    rrset.update(rdataset)
                    self.records[(name, rdataset.rdtype)] = rrset
                    self.names.add(name)

    def add(self, name: str, rtype: str, value: str, ttl: int = 300) -> None:
        fq = name if name.endswith(".") else name + "."
        self.add_zone(".", f"{fq} {ttl} IN {rtype} {value}\n")

    def add_signed_zone(self, zone: SignedZone) -> None:
        """Answer every name under the zone's origin from it, with DNSSEC records."""
        with self._lock:
            self.signed.append(zone)

    def silence(self, name: str) -> None:
        """Never answer queries for ``name`` or below it: a lookup there times out."""
        with self._lock:
            self.silent.add(dns.name.from_text(name))

    def clear(self) -> None:
        with self._lock:
            self.records.clear()
            self.names.clear()
            self.silent.clear()
            self.signed.clear()

    @staticmethod
    def fit_udp(wire: bytes, out: bytes) -> bytes:
        """The answer, or an empty truncated one when it is larger than the client
        takes over UDP (it then asks again over TCP)."""
        query = dns.message.from_wire(wire)
        limit = max(512, query.payload) if query.edns >= 0 else 512
        if len(out) <= limit:
            return out
        resp = dns.message.make_response(query)
        resp.flags |= dns.flags.AA | dns.flags.TC
        return resp.to_wire()

    def answer(self, wire: bytes) -> bytes | None:
        query = dns.message.from_wire(wire)
        self.queries += 1
        resp = dns.message.make_response(query)
        resp.flags |= dns.flags.AA
        q = query.question[0]
        if any(q.name.is_subdomain(n) for n in self.silent):
            return None
        for zone in self.signed:
            if zone.covers(q.name):
                return zone.answer(query).to_wire()
        with self._lock:
            rrset = self.records.get((q.name, q.rdtype))
            cname = self.records.get((q.name, dns.rdatatype.CNAME))
            known = q.name in self.names or any(n.is_subdomain(q.name) for n in self.names)
        if rrset is not None:
            resp.answer.append(rrset)
        elif cname is not None:
            resp.answer.append(cname)
            target = cname[0].target
            with self._lock:
                follow = self.records.get((target, q.rdtype))
            if follow is not None:
                resp.answer.append(follow)
        elif not known:
            resp.set_rcode(dns.rcode.NXDOMAIN)
        return resp.to_wire()

    def start(self) -> int:
        outer = self

        class Udp(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                data, sock = self.request
                try:
                    out = outer.answer(data)
                    if out is not None:
                        sock.sendto(outer.fit_udp(data, out), self.client_address)
                except Exception:
                    pass

        class Tcp(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                conn = self.request
                try:
                    while True:
                        head = conn.recv(2)
                        if len(head) < 2:
                            return
                        (n,) = struct.unpack("!H", head)
                        data = b""
                        while len(data) < n:
                            chunk = conn.recv(n - len(data))
                            if not chunk:
                                return
                            data += chunk
                        out = outer.answer(data)
                        if out is None:
                            return
                        conn.sendall(struct.pack("!H", len(out)) + out)
                except OSError:
                    return

        # Bind UDP first on a free port, then TCP on the same port.
        for _ in range(20):
            udp = socketserver.ThreadingUDPServer((self.host, 0), Udp)
            port = udp.server_address[1]
            try:
                tcp = socketserver.ThreadingTCPServer((self.host, port), Tcp)
            except OSError:
                udp.server_close()
                continue
            break
        else:  # pragma: no cover
            raise RuntimeError("no free port for the DNS server")
        udp.daemon_threads = tcp.daemon_threads = True
        self._udp, self._tcp, self.port = udp, tcp, port
        for srv in (udp, tcp):
            threading.Thread(
                target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
            ).start()
        return port

    def stop(self) -> None:
        for srv in (self._udp, self._tcp):
            if srv is not None:
                srv.shutdown()
                srv.server_close()


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])
