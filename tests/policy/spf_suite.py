"""The OpenSPF RFC 7208 test suite, served from a real DNS server on loopback.

The suite (tests/data/openspf/rfc7208-tests.yml, BSD licence beside it) is a
stream of YAML scenarios: ``zonedata: {name: [{TYPE: value}]}`` and
``tests: {id: {helo, host, mailfrom, result, explanation?}}``. Zone data is
read as pyspf's own test driver reads it:

* an ``SPF`` record is also served as ``TXT`` unless the name has a ``TXT``
  of its own; ``TXT: NONE`` only stops that copy;
* a name marked ``TIMEOUT`` answers the types it has records for and never
  answers any other type; an unknown name whose first label is ``error``
  never answers either;
* TXT/SPF text is sent as bytes: code points up to U+00FF as those bytes
  (the suite writes raw bytes such as ``\\xEF\\xBB\\xBF`` that way).

The server chases CNAME chains within its data, as a recursive resolver would,
and stops at a loop, leaving the loop in the answer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.CNAME
import dns.rdtypes.ANY.MX
import dns.rdtypes.ANY.PTR
import dns.rdtypes.ANY.SPF
import dns.rdtypes.ANY.TXT
import dns.rdtypes.IN.A
import dns.rdtypes.IN.AAAA
import dns.rrset
import yaml

from support.dnsserver import DnsServer

SUITE = Path(__file__).resolve().parent.parent / "data" / "openspf" / "rfc7208-tests.yml"

IN = dns.rdataclass.IN
TTL = 300


class NoAnswer(Exception):
    """Raised from :meth:`SpfSuiteServer.answer` so that the query goes unanswered."""


def _name(text: str) -> dns.name.Name:
    return dns.name.from_text(text.rstrip(".") + ".")


def _bytes(text: str) -> bytes:
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        return text.encode("utf-8")


def _rdata(rtype: str, value: Any) -> dns.rdata.Rdata | None:
    """One record of the suite as dnspython rdata; None when DNS cannot carry it."""
    if rtype in ("TXT", "SPF"):
        strings = [str(s) for s in value] if isinstance(value, list) else [str(value)]
        if not strings:
            return None  # a TXT with no strings cannot go over the wire (null-text)
        cls = dns.rdtypes.ANY.TXT.TXT if rtype == "TXT" else dns.rdtypes.ANY.SPF.SPF
        rdtype = dns.rdatatype.TXT if rtype == "TXT" else dns.rdatatype.SPF
        return cls(IN, rdtype, [_bytes(s) for s in strings])
    if rtype == "A":
        return dns.rdtypes.IN.A.A(IN, dns.rdatatype.A, str(value))
    if rtype == "AAAA":
        return dns.rdtypes.IN.AAAA.AAAA(IN, dns.rdatatype.AAAA, str(value))
    if rtype == "MX":
        pref, host = value
        return dns.rdtypes.ANY.MX.MX(IN, dns.rdatatype.MX, int(pref), _name(str(host)))
    if rtype == "PTR":
        return dns.rdtypes.ANY.PTR.PTR(IN, dns.rdatatype.PTR, _name(str(value)))
    if rtype == "CNAME":
        return dns.rdtypes.ANY.CNAME.CNAME(IN, dns.rdatatype.CNAME, _name(str(value)))
    raise ValueError(f"record type {rtype} is not in the suite's format")


@dataclass
class SpfCase:
    scenario: str
    id: str
    helo: str
    host: str
    mailfrom: str
    results: list[str]
    explanation: str | None
    spec: str


@dataclass
class Scenario:
    index: int
    description: str
    zonedata: dict[str, list[Any]]
    cases: list[SpfCase] = field(default_factory=list)


def load_suite(path: Path = SUITE) -> list[Scenario]:
    scenarios: list[Scenario] = []
    with path.open("rb") as fh:
        for index, doc in enumerate(yaml.safe_load_all(fh)):
            if not doc:
                continue
            sc = Scenario(index, str(doc.get("description", f"scenario {index}")), doc["zonedata"])
            for tid, t in doc["tests"].items():
                result = t["result"]
                sc.cases.append(
                    SpfCase(
                        scenario=sc.description,
                        id=str(tid),
                        helo=str(t["helo"]),
                        host=str(t["host"]),
                        mailfrom=str(t["mailfrom"]),
                        results=[result] if isinstance(result, str) else list(result),
                        explanation=t.get("explanation"),
                        spec=str(t.get("spec", "")),
                    )
                )
            scenarios.append(sc)
    return scenarios


class SpfSuiteServer(DnsServer):
    """The test DNS server, plus names that time out and full CNAME chasing."""

    def __init__(self) -> None:
        super().__init__()
        self.timeout_names: set[dns.name.Name] = set()

    def load(self, zonedata: dict[str, list[Any]]) -> None:
        """Serve one scenario's zone data (replacing whatever was served)."""
        self.clear()
        self.timeout_names.clear()
        for owner, entries in zonedata.items():
            name = _name(owner)
            has_txt = any(isinstance(e, dict) and "TXT" in e for e in entries)
            records: list[tuple[str, Any]] = []
            for entry in entries:
                if entry == "TIMEOUT":
                    self.timeout_names.add(name)
                    continue
                for rtype, value in entry.items():
                    if value == "NONE":
                        continue
                    records.append((rtype, value))
                    if rtype == "SPF" and not has_txt:
                        records.append(("TXT", value))
            with self._lock:
                self.names.add(name)
                for rtype, value in records:
                    rdata = _rdata(rtype, value)
                    if rdata is None:
                        continue
                    key = (name, rdata.rdtype)
                    rrset = self.records.get(key)
                    if rrset is None:
                        rrset = self.records[key] = dns.rrset.RRset(name, IN, rdata.rdtype)
                        rrset.ttl = TTL
                    rrset.add(rdata)

    def clear(self) -> None:
        super().clear()
        self.timeout_names.clear()

    def answer(self, wire: bytes) -> bytes:
        query = dns.message.from_wire(wire)
        self.queries += 1
        q = query.question[0]
        resp = dns.message.make_response(query)
        resp.flags |= dns.flags.AA
        name, seen = q.name, set()
        while True:
            with self._lock:
                rrset = self.records.get((name, q.rdtype))
                cname = self.records.get((name, dns.rdatatype.CNAME))
                known = name in self.names or any(n.is_subdomain(name) for n in self.names)
            if rrset is not None:
                resp.answer.append(rrset)
                break
            if cname is not None and q.rdtype != dns.rdatatype.CNAME:
                if name in seen:
                    break  # a CNAME loop: the answer shows it, the resolver gives up
                seen.add(name)
                resp.answer.append(cname)
                name = cname[0].target
                continue
            if name in self.timeout_names:
                raise NoAnswer(str(name))
            if not known:
                if name.labels and name.labels[0].lower() == b"error":
                    raise NoAnswer(str(name))
                if not resp.answer:
                    resp.set_rcode(dns.rcode.NXDOMAIN)
            break
        return resp.to_wire()
