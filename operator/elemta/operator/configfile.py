"""The ``elemta.toml`` every pod of a cluster reads, rendered from the spec.

The operator decides what only it can know (listen addresses inside the pod,
the in-cluster names of policy and NATS, where Secrets are mounted); the rest
comes from ``spec`` and then from ``spec.config``, merged under the operator's
keys. The text's hash goes on each pod template, so a change rolls the pods.
"""

from __future__ import annotations

import hashlib
from typing import Any

import tomli_w

from .model import Cluster, deep_merge, dns_label

__all__ = [
    "CONFIG_PATH",
    "DKIM_DIR",
    "HTTP_PORTS",
    "POLICY_PORT",
    "SMTP_TLS_DIR",
    "STATE_DIR",
    "config_hash",
    "container_port",
    "dkim_file",
    "nats_url",
    "secret_env",
    "ingress_listeners",
    "primary_listener",
    "render_config",
    "render_config_text",
]

CONFIG_PATH = "/etc/elemta/elemta.toml"
STATE_DIR = "/var/lib/elemta"
SMTP_TLS_DIR = "/etc/elemta/tls/smtp"
POLICY_TLS_DIR = "/etc/elemta/tls/policy"
CLIENT_TLS_DIR = "/etc/elemta/tls/client"
NATS_SECRET_DIR = "/etc/elemta/nats"
DKIM_DIR = "/etc/elemta/dkim"
POLICY_PORT = 7071
API_PORT = 8025
#: Health and metrics port of each component inside its pod.
HTTP_PORTS = {"ingress": 9101, "policy": 9102, "queue": 9103, "delivery": 9104, "api": API_PORT}
_WELL_KNOWN = {25: 2525, 465: 2465, 587: 2587}


def container_port(listener: dict[str, Any]) -> int:
    """The unprivileged port a listener binds inside the pod."""
    if listener.get("containerPort"):
        return int(listener["containerPort"])
    port = int(listener["port"])
    if port in _WELL_KNOWN:
        return _WELL_KNOWN[port]
    return port if port >= 1024 else port + 10000


def primary_listener(cluster: Cluster) -> dict[str, Any]:
    """The listener on ``ingress.listen``: the one on port 25, else the first; the
    others become ``ingress.listeners`` (:func:`ingress_listeners`)."""
    listeners: list[dict[str, Any]] = cluster.spec["ingress"]["listeners"]
    return next((lst for lst in listeners if lst["port"] == 25), listeners[0])


def _role(listener: dict[str, Any]) -> str:
    if listener.get("tls") == "implicit":
        return "submissions"
    return "submission" if listener.get("auth") == "required" else "mta"


def ingress_listeners(cluster: Cluster) -> list[dict[str, Any]]:
    """Every listener but the primary one, as ``[[ingress.listeners]]`` tables."""
    primary = primary_listener(cluster)
    out = []
    for lst in cluster.spec["ingress"]["listeners"]:
        if lst is primary:
            continue
        out.append(
            {
                "address": f"0.0.0.0:{container_port(lst)}",
                "role": _role(lst),
                "auth": lst.get("auth", "none") != "none",
                "tls_level": lst.get("tlsLevel", "recommended"),
                "proxy_protocol": bool(lst.get("proxyProtocol", False)),
            }
        )
    return out


def dkim_file(key: dict[str, Any]) -> str:
    return f"{DKIM_DIR}/{dns_label(key['domain'])}.{key['selector']}.pem"


def nats_url(cluster: Cluster) -> str:
    nats = cluster.spec["nats"]
    if nats["mode"] == "external":
        return str(nats["url"])
    scheme = "tls" if cluster.internal_tls else "nats"
    return f"{scheme}://{cluster.service_host('nats')}:4222"


def _nats_keys(cluster: Cluster) -> dict[str, Any]:
    """TLS files and credentials for NATS (secrets themselves come from the environment)."""
    nats = cluster.spec["nats"]
    if nats["mode"] == "managed":
        if not cluster.internal_tls:
            return {}
        return {"tls_ca": f"{CLIENT_TLS_DIR}/ca.crt", "user": "elemta"}
    keys = cluster.nats_secret_keys
    out: dict[str, Any] = {}
    if "ca.crt" in keys:
        out["tls_ca"] = f"{NATS_SECRET_DIR}/ca.crt"
    if {"tls.crt", "tls.key"} <= keys:
        out["tls_cert"] = f"{NATS_SECRET_DIR}/tls.crt"
        out["tls_key"] = f"{NATS_SECRET_DIR}/tls.key"
    if "creds" in keys:
        out["creds_file"] = f"{NATS_SECRET_DIR}/creds"
    return out


def secret_env(cluster: Cluster) -> list[dict[str, Any]]:
    """``ELEMTA_NATS_*`` variables taken from Secrets, never written into the ConfigMap."""
    nats = cluster.spec["nats"]

    def ref(var: str, secret: str, key: str) -> dict[str, Any]:
        return {"name": var, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}

    if nats["mode"] == "managed":
        if not cluster.internal_tls:
            return []
        return [ref("ELEMTA_NATS_PASSWORD", cluster.child("nats-auth"), "password")]
    secret = (nats.get("credentialsSecret") or {}).get("name")
    keys = cluster.nats_secret_keys
    if not secret or "creds" in keys:
        return []
    if "token" in keys:
        return [ref("ELEMTA_NATS_TOKEN", secret, "token")]
    if {"username", "password"} <= keys:
        return [
            ref("ELEMTA_NATS_USER", secret, "username"),
            ref("ELEMTA_NATS_PASSWORD", secret, "password"),
        ]
    return []


def render_config(cluster: Cluster) -> dict[str, Any]:
    """The configuration as a TOML-ready mapping."""
    spec = cluster.spec
    nats = spec["nats"]
    smtp = primary_listener(cluster)
    managed = {
        "server": {
            "hostname": spec["hostname"],
            "local_domains": list(spec["localDomains"]),
            "relay_domains": list(spec["relayDomains"]),
            "trusted_networks": list(spec["trustedNetworks"]),
            "state_dir": STATE_DIR,
        },
        "nats": {"url": nats_url(cluster)},
        "ingress": {
            "listen": f"0.0.0.0:{container_port(smtp)}",
            "http_listen": f"0.0.0.0:{HTTP_PORTS['ingress']}",
            "tls_cert": f"{SMTP_TLS_DIR}/tls.crt",
            "tls_key": f"{SMTP_TLS_DIR}/tls.key",
            "tls_level": smtp.get("tlsLevel", "recommended"),
            "auth_on_mta": smtp.get("auth", "none") != "none",
            "proxy_protocol": bool(smtp.get("proxyProtocol", False)),
            "proxy_networks": list(spec["ingress"].get("proxyNetworks", [])),
            "listeners": ingress_listeners(cluster),
        },
        "policy": {
            "listen": f"0.0.0.0:{POLICY_PORT}",
            "address": f"{cluster.service_host('policy')}:{POLICY_PORT}",
            "http_listen": f"0.0.0.0:{HTTP_PORTS['policy']}",
            "dkim_keys": [
                {
                    "domain": key["domain"],
                    "selector": key["selector"],
                    "algorithm": key["algorithm"],
                    "key_file": dkim_file(key),
                }
                for key in spec["dkim"]["keys"]
                if key["sign"]
            ],
        },
        "queue": {"http_listen": f"0.0.0.0:{HTTP_PORTS['queue']}"},
        "delivery": {"http_listen": f"0.0.0.0:{HTTP_PORTS['delivery']}"},
        "api": {"listen": f"0.0.0.0:{API_PORT}"},
        "telemetry": {
            "otlp_endpoint": spec["observability"]["otlpEndpoint"],
            "log_level": spec["observability"]["logLevel"],
            "log_format": "json",
        },
    }
    if nats["mode"] == "managed":
        managed["nats"]["replicas"] = int(nats["replicas"])
    managed["nats"].update(_nats_keys(cluster))
    if cluster.internal_tls:
        # Mutual TLS between ingress and policy, from the operator's CA.
        managed["policy"].update(
            {
                "tls_cert": f"{POLICY_TLS_DIR}/tls.crt",
                "tls_key": f"{POLICY_TLS_DIR}/tls.key",
                "tls_client_ca": f"{POLICY_TLS_DIR}/ca.crt",
                "tls_ca": f"{CLIENT_TLS_DIR}/ca.crt",
                "client_cert": f"{CLIENT_TLS_DIR}/tls.crt",
                "client_key": f"{CLIENT_TLS_DIR}/tls.key",
            }
        )
    return deep_merge(spec.get("config") or {}, managed)


def render_config_text(cluster: Cluster) -> str:
    header = (
        f"# Rendered by the Elemta operator from ElemtaCluster {cluster.namespace}/{cluster.name}.\n"
        "# Edit the ElemtaCluster (spec, spec.config), not this file.\n"
    )
    return header + tomli_w.dumps(render_config(cluster))


def config_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]
