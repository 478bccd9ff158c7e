"""Test data for the DMARC tests: authheaders' cases served over real DNS, the
OpenDMARC and checkdmarc tables, and DKIM verification of the cases' messages."""

from __future__ import annotations

import email
import json
import re
from pathlib import Path
from typing import Any

import dkim

from support.dnsserver import DnsServer

DATA = Path(__file__).resolve().parent.parent / "data" / "dmarc"
AUTHHEADERS = DATA / "authheaders"


def load(name: str) -> Any:
    return json.loads((DATA / name).read_text())


AUTHHEADERS_SUITE = load("authheaders/authheaders_cases.json")
OPENDMARC = load("opendmarc/opendmarc_tables.json")
CHECKDMARC = load("checkdmarc/dmarc_record_cases.json")


def dns_map() -> dict[str, str | None]:
    """The suite's DNS map, names without the final dot, ``{"file": f}`` read in."""
    out: dict[str, str | None] = {}
    for name, value in AUTHHEADERS_SUITE["dns_txt"].items():
        if isinstance(value, dict):
            value = (AUTHHEADERS / value["file"]).read_text().strip()
        out[name.rstrip(".").lower()] = value
    return out


def _quoted(text: str) -> str:
    chunks = [text[i : i + 255] for i in range(0, len(text), 255)] or [""]
    return " ".join('"' + c.replace("\\", "\\\\").replace('"', '\\"') + '"' for c in chunks)


def serve_authheaders_dns(server: DnsServer) -> None:
    """Serve the map as authheaders' mock resolver means it.

    ``_``-names (``_dmarc``, ``_domainkey``) are TXT records, ``""`` meaning none;
    other names exist only when they map to a host name, served as their MX
    (``sub2.example.biz``); ``null`` or ``""`` there is a name with no A, AAAA or
    MX, which RFC 9091 counts as non-existent.
    """
    for name, value in dns_map().items():
        if not value:
            continue
        if name.startswith("_") or "._" in name:
            server.add(name, "TXT", _quoted(value))
        else:
            server.add(name, "MX", f"10 {value.rstrip('.')}.")


def message(case: dict[str, Any]) -> bytes:
    return (AUTHHEADERS / case["message_file"]).read_bytes()


def from_headers(raw: bytes) -> list[tuple[str, str]]:
    msg = email.message_from_bytes(raw)
    return [(k, str(v)) for k, v in msg.items() if k.lower() == "from"]


def _dkim_dns(name: bytes | str, timeout: float = 5) -> bytes | None:
    key = (name.decode() if isinstance(name, bytes) else name).rstrip(".").lower()
    value = dns_map().get(key)
    return value.encode() if value else None


def verify_dkim(raw: bytes) -> list[tuple[str, str]]:
    """``(pass|fail, d=)`` of each DKIM-Signature, verified by dkimpy against the map."""
    count = sum(1 for k in email.message_from_bytes(raw).keys() if k.lower() == "dkim-signature")
    out: list[tuple[str, str]] = []
    for idx in range(count):
        d = dkim.DKIM(raw)
        ok = d.verify(idx=idx, dnsfunc=_dkim_dns)
        domain = d.domain.decode() if isinstance(d.domain, bytes) else str(d.domain)
        out.append(("pass" if ok else "fail", domain.lower()))
    return out


_METHOD = re.compile(r"(\w+)=(\w+)((?:\s*\([^)]*\))?)((?:\s+[\w.]+=\S+)*)")


def ar_results(header: str) -> list[dict[str, str]]:
    """The resinfo parts of an Authentication-Results header: method, result,
    comment and properties."""
    body = header.split(":", 1)[1]
    parts, depth, current = [], 0, ""
    for ch in body:
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if ch == ";" and not depth:
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    out = []
    for part in parts[1:]:
        m = _METHOD.match(part.strip())
        if not m:
            continue
        props = dict(p.split("=", 1) for p in m.group(4).split())
        out.append({"method": m.group(1), "result": m.group(2), "comment": m.group(3), **props})
    return out


def dkim_inputs(case: dict[str, Any]) -> tuple[list[tuple[str, str]], str]:
    """The DKIM results a case feeds DMARC, and where they came from: the ``prev``
    Authentication-Results when the case has one, else dkimpy's verification of the
    message unless the case turns DKIM off."""
    kwargs = case["kwargs"]
    if "prev" in kwargs:
        prev = [r for r in ar_results(kwargs["prev"]) if r["method"] == "dkim"]
        return [(r["result"], r["header.d"]) for r in prev], "prev"
    if kwargs.get("dkim", True) is False:
        return [], "off"
    return verify_dkim(message(case)), "verified"


SOURCES = {
    "Used From Domain Record": "from",
    "Used Org Domain Record": "org",
    "Used Tree Walk": "psd",
}
