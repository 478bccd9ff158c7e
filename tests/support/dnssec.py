"""DNSSEC for the tests: a zone signed with dnspython, and a real validating resolver.

:class:`SignedZone` signs zone text (ECDSA P-256 KSK and ZSK, NSEC chain) and
answers queries for it as an authoritative server does: RRSIGs with the
answers when the query sets DO, SOA and NSEC records proving NODATA and
NXDOMAIN (RFC 4035 3.1.3). :meth:`DnsServer.add_signed_zone` makes the test
DNS server answer from it.

:class:`Unbound` runs Debian's ``unbound`` in a temporary directory on a free
port, sending everything under ``test.`` to the test DNS server (a stub
zone), with the signed zones' keys as trust anchors and the rest of
``test.`` insecure. Its answers carry the AD bit exactly when it validated
them. ``unbound`` is installed with apt-get when missing.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import time
from pathlib import Path

import dns.dnssec
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import dns.zone
from cryptography.hazmat.primitives.asymmetric import ec

from .dnsserver import free_port
from .processes import stop_process

__all__ = ["SignedZone", "Unbound", "unbound_binary"]

IN = dns.rdataclass.IN


class SignedZone:
    def __init__(self, origin: str, text: str, ttl: int = 300) -> None:
        self.origin = dns.name.from_text(origin)
        head = (
            f"@ {ttl} IN SOA ns.{self.origin} hostmaster.{self.origin} 1 3600 600 86400 {ttl}\n"
            f"@ {ttl} IN NS ns.{self.origin}\nns {ttl} IN A 127.0.0.1\n"
        )
        self.zone = dns.zone.from_text(head + text, origin=self.origin, relativize=False)
        ksk = ec.generate_private_key(ec.SECP256R1())
        zsk = ec.generate_private_key(ec.SECP256R1())
        algorithm = dns.dnssec.Algorithm.ECDSAP256SHA256
        self.ksk = dns.dnssec.make_dnskey(ksk.public_key(), algorithm, flags=257)
        zsk_key = dns.dnssec.make_dnskey(zsk.public_key(), algorithm, flags=256)
        now = dt.datetime.now(dt.UTC)
        with self.zone.writer() as txn:
            dns.dnssec.sign_zone(
                self.zone,
                txn=txn,
                keys=[(ksk, self.ksk), (zsk, zsk_key)],
                inception=now - dt.timedelta(hours=1),
                expiration=now + dt.timedelta(days=2),
            )
        self.nsec = sorted(
            name
            for name, node in self.zone.nodes.items()
            if node.get_rdataset(IN, dns.rdatatype.NSEC)
        )

    @property
    def trust_anchor(self) -> str:
        return f"{self.origin} DNSKEY {self.ksk.to_text()}"

    def covers(self, name: dns.name.Name) -> bool:
        return name.is_subdomain(self.origin)

    # -- answering ---------------------------------------------------------------

    def _add(
        self, section: list[dns.rrset.RRset], name: dns.name.Name, rdtype: int, do: bool
    ) -> None:
        node = self.zone.get_node(name)
        if node is None:
            return
        rdataset = node.get_rdataset(IN, rdtype)
        if rdataset is None:
            return
        rrset = dns.rrset.RRset(name, IN, rdtype)
        rrset.update(rdataset)
        if rrset not in section:
            section.append(rrset)
        if do:
            sigs = node.get_rdataset(IN, dns.rdatatype.RRSIG, covers=rdtype)
            if sigs is not None:
                sig = dns.rrset.RRset(name, IN, dns.rdatatype.RRSIG, covers=rdtype)
                sig.update(sigs)
                if sig not in section:
                    section.append(sig)

    def _covering(self, name: dns.name.Name) -> dns.name.Name:
        """The NSEC owner just before ``name`` in canonical order (wrapping)."""
        before = [n for n in self.nsec if n < name]
        return before[-1] if before else self.nsec[-1]

    def answer(self, query: dns.message.Message) -> dns.message.Message:
        resp = dns.message.make_response(query)
        resp.flags |= dns.flags.AA
        do = bool(query.ednsflags & dns.flags.DO)
        q = query.question[0]
        node = self.zone.get_node(q.name)
        soa = dns.rdatatype.SOA
        if node is not None and node.get_rdataset(IN, q.rdtype) is not None:
            self._add(resp.answer, q.name, q.rdtype, do)
            return resp
        exists = node is not None or any(n.is_subdomain(q.name) for n in self.zone.nodes)
        self._add(resp.authority, self.origin, soa, do)
        if not exists:
            resp.set_rcode(dns.rcode.NXDOMAIN)
        if do:
            nsec = dns.rdatatype.NSEC
            if node is not None:
                self._add(resp.authority, q.name, nsec, do)
            else:
                self._add(resp.authority, self._covering(q.name), nsec, do)
            if not exists:
                encloser = q.name.parent()
                while self.zone.get_node(encloser) is None and encloser != self.origin:
                    encloser = encloser.parent()
                wildcard = dns.name.from_text("*", encloser)
                self._add(resp.authority, self._covering(wildcard), nsec, do)
        return resp


def unbound_binary() -> str:
    found = shutil.which("unbound") or (
        "/usr/sbin/unbound" if Path("/usr/sbin/unbound").exists() else None
    )
    if found:
        return found
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", "unbound"], check=True, env=env)
    return shutil.which("unbound") or "/usr/sbin/unbound"


class Unbound:
    """A validating resolver on 127.0.0.1:<port> for the zones of the test DNS server."""

    def __init__(self, workdir: Path, dns_port: int, anchors: list[str]) -> None:
        self.dir = workdir
        self.dns_port = dns_port
        self.anchors = anchors
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0) -> int:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        lines = [
            "server:",
            "  interface: 127.0.0.1",
            f"  port: {self.port}",
            "  do-daemonize: no",
            '  username: ""',
            '  chroot: ""',
            f'  directory: "{self.dir}"',
            f'  pidfile: "{self.dir}/unbound.pid"',
            "  use-syslog: no",
            f'  logfile: "{self.dir}/unbound.log"',
            "  verbosity: 1",
            "  do-ip6: no",
            "  num-threads: 1",
            "  qname-minimisation: no",
            "  do-not-query-localhost: no",
            "  access-control: 127.0.0.0/8 allow",
            '  module-config: "validator iterator"',
            '  local-zone: "test." nodefault',
            '  domain-insecure: "test."',
            "  val-log-level: 2",
            *(f'  trust-anchor: "{a}"' for a in self.anchors),
            "remote-control:",
            "  control-enable: no",
            "stub-zone:",
            '  name: "test."',
            f"  stub-addr: 127.0.0.1@{self.dns_port}",
            "",
        ]
        conf = self.dir / "unbound.conf"
        conf.write_text("\n".join(lines))
        self.proc = subprocess.Popen(
            [unbound_binary(), "-d", "-c", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + timeout
        probe = dns.message.make_query("localhost.", "A")
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise RuntimeError(f"unbound exited: {err}{self.log()}")
            try:
                dns.query.udp(probe, "127.0.0.1", port=self.port, timeout=0.2)
                return self.port
            except (OSError, dns.exception.Timeout):
                time.sleep(0.05)
        raise RuntimeError(f"unbound did not answer on port {self.port}: {self.log()}")

    def log(self) -> str:
        path = self.dir / "unbound.log"
        return path.read_text() if path.exists() else ""

    def stop(self) -> None:
        stop_process(self.proc, 5)
