"""postfix-mta-sts-resolver's test scenarios served for real: TXT records on the test
DNS server, policies from an HTTPS server with certificates from a test CA.

``scenarios.json`` holds, per domain, the ``_mta-sts`` TXT record and how nginx
answers for ``mta-sts.<domain>`` in that project's suite (status, body, media
type, certificate); the two over-long answers are nginx Lua blocks, rebuilt
here as aiohttp handlers that send the same bytes. ``dnsmasq.conf.appendix``
adds ``no-record.loc`` (policy host, no TXT), ``no-data.loc`` (an address, no
TXT) and ``blackhole.loc`` (a DNS server that never answers).
"""

from __future__ import annotations

import json
from pathlib import Path

from aiohttp import web

from support.dnsserver import DnsServer
from support.policyhost import PolicyHost

DATA = Path(__file__).parent.parent / "data" / "mta-sts" / "snawoot"
LINES = ["version: STSv1", "mode: enforce", "max_age: 86400", "mx: mail.loc"]
FILLER = b"a" * 64


async def _chunked_overlength(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/plain"})
    response.enable_chunked_encoding()
    await response.prepare(request)
    await response.write("".join(f"{line}\n" for line in LINES).encode())
    for _ in range(2049):
        await response.write(FILLER)
    await response.write_eof()
    return response


async def _static_overlength(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/plain"})
    response.content_length = 131193
    await response.prepare(request)
    await response.write("".join(f"{line}\n" for line in LINES).encode())
    for _ in range(2049):
        await response.write(FILLER)
    return response


HANDLERS = {
    "chunked-overlength.loc": _chunked_overlength,
    "static-overlength.loc": _static_overlength,
}


def scenarios() -> dict[str, dict[str, object]]:
    return dict(json.loads((DATA / "scenarios.json").read_text())["scenarios"])


def install(dns: DnsServer, host: PolicyHost) -> None:
    """Publish every scenario: records on ``dns``, policies on ``host``."""
    for domain, spec in scenarios().items():
        record = str(spec["_mta-sts TXT"]).replace('"', '\\"')
        dns.add(f"_mta-sts.{domain}", "TXT", f'"{record}"')
        dns.add(f"mta-sts.{domain}", "A", "127.0.0.1")
        policy = spec["policy"]
        if not isinstance(policy, dict):
            continue
        cert = str(policy["cert"])
        host.serve(
            domain,
            body=str(policy["body"] or ""),
            status=int(policy["status"] or 200),
            content_type=str(policy["content_type_override"] or "text/plain"),
            cert="untrusted"
            if "/bad-certs/" in cert
            else "wrong-name"
            if "bad-cert" in cert
            else "good",
            handler=HANDLERS.get(domain),
        )
    dns.add("mta-sts.no-record.loc", "A", "127.0.0.1")
    dns.add("_mta-sts.no-data.loc", "A", "127.0.0.1")
    dns.add("mta-sts.no-data.loc", "A", "127.0.0.1")
    dns.silence("blackhole.loc")


def refdata(name: str) -> list[tuple[str, str]]:
    """(query, expected answer) pairs of a socketmap reference file."""
    out = []
    for line in (DATA / name).read_text().splitlines():
        query, _, answer = line.partition("\t")
        out.append((query, answer))
    return out


def nexthop_domain(nexthop: str) -> str:
    """Postfix's next-hop syntax (``[good.loc]:123``) to the domain it names."""
    host = nexthop
    if host.startswith("["):
        host = host[1 : host.index("]")]
    elif host.count(":") == 1:
        host = host.partition(":")[0]
    return host
