"""Services and NetworkPolicies.

The SMTP Service keeps client addresses (``externalTrafficPolicy: Local`` by
default): SPF, DNSBL checks and rate limits are about the client, not a node.
Every component exposes its health and metrics port under the name
``metrics`` (numbers differ per component), so one Service and one
ServiceMonitor cover them all.
"""

from __future__ import annotations

from typing import Any

from .configfile import API_PORT, POLICY_PORT, container_port
from .model import Cluster

__all__ = ["METRICS_PORT", "render_network_policies", "render_services"]

METRICS_PORT = 9100


def _service(cluster: Cluster, part: str, component: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": cluster.metadata(part, component),
        "spec": spec,
    }


def render_smtp_service(cluster: Cluster) -> dict[str, Any]:
    ingress = cluster.spec["ingress"]
    svc = ingress["service"]
    spec: dict[str, Any] = {
        "type": svc["type"],
        "selector": cluster.selector("ingress"),
        "ports": [
            {
                "name": lst["name"],
                "port": lst["port"],
                "targetPort": container_port(lst),
                "protocol": "TCP",
            }
            for lst in ingress["listeners"]
        ],
    }
    if svc["type"] != "ClusterIP":
        spec["externalTrafficPolicy"] = svc["externalTrafficPolicy"]
    if svc.get("loadBalancerIP"):
        spec["loadBalancerIP"] = svc["loadBalancerIP"]
    if svc.get("loadBalancerSourceRanges"):
        spec["loadBalancerSourceRanges"] = list(svc["loadBalancerSourceRanges"])
    out = _service(cluster, "smtp", "ingress", spec)
    if svc.get("annotations"):
        out["metadata"]["annotations"] = dict(svc["annotations"])
    return out


def render_services(cluster: Cluster) -> list[dict[str, Any]]:
    policy = _service(
        cluster,
        "policy",
        "policy",
        {
            "type": "ClusterIP",
            "selector": cluster.selector("policy"),
            "ports": [{"name": "grpc", "port": POLICY_PORT, "targetPort": "grpc"}],
        },
    )
    api = _service(
        cluster,
        "api",
        "api",
        {
            "type": cluster.spec["api"]["serviceType"],
            "selector": cluster.selector("api"),
            "ports": [{"name": "http", "port": API_PORT, "targetPort": "metrics"}],
        },
    )
    metrics = _service(
        cluster,
        "metrics",
        "metrics",
        {
            "type": "ClusterIP",
            "clusterIP": "None",
            "selector": {
                "app.kubernetes.io/name": "elemta",
                "app.kubernetes.io/instance": cluster.name,
            },
            "ports": [{"name": "metrics", "port": METRICS_PORT, "targetPort": "metrics"}],
        },
    )
    return [render_smtp_service(cluster), policy, api, metrics]


def render_network_policies(cluster: Cluster) -> list[dict[str, Any]]:
    """Only this cluster's pods reach policy and the managed NATS."""
    own_pods = {
        "podSelector": {
            "matchLabels": {
                "app.kubernetes.io/name": "elemta",
                "app.kubernetes.io/instance": cluster.name,
            }
        }
    }
    out = [
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": cluster.metadata("policy", "policy"),
            "spec": {
                "podSelector": {"matchLabels": cluster.selector("policy")},
                "policyTypes": ["Ingress"],
                "ingress": [
                    {"from": [own_pods], "ports": [{"port": POLICY_PORT, "protocol": "TCP"}]},
                    # Health probes and Prometheus scrape the metrics port from anywhere.
                    {"ports": [{"port": "metrics", "protocol": "TCP"}]},
                ],
            },
        }
    ]
    if cluster.spec["nats"]["mode"] == "managed":
        out.append(
            {
                "apiVersion": "networking.k8s.io/v1",
                "kind": "NetworkPolicy",
                "metadata": cluster.metadata("nats", "nats"),
                "spec": {
                    "podSelector": {"matchLabels": cluster.selector("nats")},
                    "policyTypes": ["Ingress"],
                    "ingress": [
                        {"from": [own_pods], "ports": [{"port": 4222, "protocol": "TCP"}]},
                        {
                            "from": [{"podSelector": {"matchLabels": cluster.selector("nats")}}],
                            "ports": [{"port": 6222, "protocol": "TCP"}],
                        },
                        # Monitoring (health probes, KEDA's lag scaler, Prometheus).
                        {"ports": [{"port": 8222, "protocol": "TCP"}]},
                    ],
                },
            }
        )
    return out
