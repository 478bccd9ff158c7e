"""The DNS records an ``ElemtaCluster`` needs published, for its status.

Per local domain: MX to the cluster's hostname, SPF, DMARC, MTA-STS and TLS-RPT;
per DKIM key: its TXT record; and the hostname's address once the load balancer
has one. The operator does not write DNS; it lists what to publish, as Stalwart's
DNS page and KumoMTA's docs do.
"""

from __future__ import annotations

import hashlib
from typing import Any

from .model import Cluster

__all__ = ["dns_records"]


def _record(rtype: str, name: str, value: str) -> dict[str, str]:
    return {"type": rtype, "name": name, "value": value}


def dns_records(
    cluster: Cluster, dkim_txt: dict[tuple[str, str], str], lb_addresses: list[str]
) -> list[dict[str, Any]]:
    """Records as ``{type, name, value}``; names are fully qualified (trailing dot)."""
    spec = cluster.spec
    host = spec["hostname"]
    out: list[dict[str, Any]] = []
    for addr in lb_addresses:
        if ":" in addr:
            out.append(_record("AAAA", f"{host}.", addr))
        elif addr.replace(".", "").isdigit():
            out.append(_record("A", f"{host}.", addr))
        else:
            out.append(_record("CNAME", f"{host}.", f"{addr}."))
    sts = spec["mtaSts"]
    dmarc = spec["dmarc"]
    for domain in spec["localDomains"]:
        out.append(_record("MX", f"{domain}.", f"10 {host}."))
        out.append(_record("TXT", f"{domain}.", "v=spf1 mx ~all"))
        rua = dmarc["reportAddress"] or f"postmaster@{domain}"
        out.append(
            _record("TXT", f"_dmarc.{domain}.", f"v=DMARC1; p={dmarc['policy']}; rua=mailto:{rua}")
        )
        if sts["mode"] != "none":
            policy_id = hashlib.sha256(f"{sts['mode']} {host}".encode()).hexdigest()[:16]
            out.append(_record("TXT", f"_mta-sts.{domain}.", f"v=STSv1; id={policy_id}"))
            out.append(_record("CNAME", f"mta-sts.{domain}.", f"{host}."))
        tlsrpt = sts["reportAddress"] or f"mailto:tlsrpt@{domain}"
        out.append(_record("TXT", f"_smtp._tls.{domain}.", f"v=TLSRPTv1; rua={tlsrpt}"))
    for (domain, selector), txt in sorted(dkim_txt.items()):
        out.append(_record("TXT", f"{selector}._domainkey.{domain}.", txt))
    return out
