"""Delivery autoscaling: KEDA on consumer lag when KEDA is installed, else an HPA on CPU.

Consumer lag (stored messages waiting in ``ELEMTA_MESSAGES`` for their first
attempt, consumer ``delivery-first``, and delivery jobs waiting in
``ELEMTA_DELIVERY`` for the ``delivery`` consumer) is what delivery capacity
should follow: CPU stays low while workers wait on slow remote servers. KEDA reads it from the NATS monitoring endpoint;
without KEDA (or without a monitoring endpoint for an external NATS) an HPA on
CPU is the fallback. Either way the Deployment leaves ``replicas`` to it.
"""

from __future__ import annotations

from typing import Any

from elemta.common.jetstream import (
    DELIVERY_CONSUMER,
    DELIVERY_STREAM,
    FIRST_CONSUMER,
    MESSAGES_STREAM,
)

from .model import Capabilities, Cluster

__all__ = ["monitoring_endpoint", "render_autoscaler", "render_service_monitor"]


def monitoring_endpoint(cluster: Cluster) -> str:
    """``host:port`` of the NATS monitoring endpoint, or empty when unknown."""
    nats = cluster.spec["nats"]
    if nats["mode"] == "managed":
        return f"{cluster.service_host('nats')}:8222"
    return str(nats.get("monitoringEndpoint") or "")


def render_autoscaler(cluster: Cluster, caps: Capabilities) -> list[dict[str, Any]]:
    auto = cluster.spec["delivery"]["autoscaling"]
    if not auto["enabled"]:
        return []
    target = {"apiVersion": "apps/v1", "kind": "Deployment", "name": cluster.child("delivery")}
    endpoint = monitoring_endpoint(cluster)
    if caps.keda and endpoint:
        return [
            {
                "apiVersion": "keda.sh/v1alpha1",
                "kind": "ScaledObject",
                "metadata": cluster.metadata("delivery", "delivery"),
                "spec": {
                    "scaleTargetRef": target,
                    "minReplicaCount": auto["minReplicas"],
                    "maxReplicaCount": auto["maxReplicas"],
                    "pollingInterval": 15,
                    "cooldownPeriod": 300,
                    "triggers": [
                        *(
                            {
                                "type": "nats-jetstream",
                                "metadata": {
                                    "natsServerMonitoringEndpoint": endpoint,
                                    "account": "$G",
                                    "stream": stream,
                                    "consumer": consumer,
                                    "lagThreshold": str(auto["targetLag"]),
                                    "useHttps": "false",
                                },
                            }
                            for stream, consumer in (
                                (MESSAGES_STREAM, FIRST_CONSUMER),
                                (DELIVERY_STREAM, DELIVERY_CONSUMER),
                            )
                        ),
                        {
                            "type": "cpu",
                            "metricType": "Utilization",
                            "metadata": {"value": str(auto["targetCPUUtilization"])},
                        },
                    ],
                },
            }
        ]
    return [
        {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": cluster.metadata("delivery", "delivery"),
            "spec": {
                "scaleTargetRef": target,
                "minReplicas": auto["minReplicas"],
                "maxReplicas": auto["maxReplicas"],
                "metrics": [
                    {
                        "type": "Resource",
                        "resource": {
                            "name": "cpu",
                            "target": {
                                "type": "Utilization",
                                "averageUtilization": auto["targetCPUUtilization"],
                            },
                        },
                    }
                ],
                "behavior": {
                    # Scale down slowly: a burst of deferrals comes back within minutes.
                    "scaleDown": {"stabilizationWindowSeconds": 600},
                },
            },
        }
    ]


def render_service_monitor(cluster: Cluster, caps: Capabilities) -> list[dict[str, Any]]:
    if not (cluster.spec["observability"]["serviceMonitor"] and caps.service_monitor):
        return []
    return [
        {
            "apiVersion": "monitoring.coreos.com/v1",
            "kind": "ServiceMonitor",
            "metadata": cluster.metadata("metrics", "metrics"),
            "spec": {
                "selector": {"matchLabels": cluster.labels("metrics")},
                "endpoints": [{"port": "metrics", "path": "/metrics", "interval": "30s"}],
            },
        }
    ]
