"""Deployments and PodDisruptionBudgets of the Elemta services.

Each service is one Deployment running ``elemta serve <service>`` from the same
image and the same ConfigMap. Pods run as a non-root user on a read-only root
filesystem with every capability dropped; state and ``/tmp`` are ``emptyDir``.
The ConfigMap's hash is a pod-template annotation, so a configuration change
rolls the pods. The queue runs two pods by default: one is active through a
lease in JetStream KV, the other stands by, so a rolling update (and a lost
node) hands the work over within ``queue.lease_time`` instead of stopping it;
delivery leaves ``replicas`` to its autoscaler.
"""

from __future__ import annotations

from typing import Any

from .configfile import (
    CLIENT_TLS_DIR,
    CONFIG_PATH,
    DKIM_DIR,
    HTTP_PORTS,
    NATS_SECRET_DIR,
    POLICY_PORT,
    POLICY_TLS_DIR,
    SMTP_TLS_DIR,
    STATE_DIR,
    container_port,
    dkim_file,
    secret_env,
)
from .model import COMPONENTS, CONFIG_HASH_ANNOTATION, Cluster, deep_merge, dns_label

__all__ = ["RUN_AS", "dkim_secret_name", "render_deployments", "render_pdbs", "smtp_secret_name"]

RUN_AS = 10001
_DEFAULT_RESOURCES = {
    "ingress": {"requests": {"cpu": "200m", "memory": "192Mi"}, "limits": {"memory": "512Mi"}},
    "policy": {"requests": {"cpu": "200m", "memory": "256Mi"}, "limits": {"memory": "768Mi"}},
    "queue": {"requests": {"cpu": "100m", "memory": "192Mi"}, "limits": {"memory": "512Mi"}},
    "delivery": {"requests": {"cpu": "200m", "memory": "192Mi"}, "limits": {"memory": "512Mi"}},
    "api": {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"memory": "384Mi"}},
}
#: Seconds a pod gets between SIGTERM and SIGKILL: the drain plus a margin.
_GRACE = {"ingress": 60, "policy": 30, "queue": 30, "delivery": 90, "api": 15}


def smtp_secret_name(cluster: Cluster) -> str:
    tls = cluster.spec["tls"]
    if tls["mode"] == "secret":
        return str(tls["secretName"])
    return cluster.child("smtp-tls")


def dkim_secret_name(cluster: Cluster, key: dict[str, Any]) -> str:
    if key.get("secretName"):
        return str(key["secretName"])
    return cluster.child(f"dkim-{key['selector']}-{dns_label(key['domain'])}")


def _replicas(cluster: Cluster, component: str) -> int | None:
    if component == "delivery" and cluster.spec["delivery"]["autoscaling"]["enabled"]:
        return None  # the autoscaler owns it
    return int(cluster.spec[component]["replicas"])


def _ports(cluster: Cluster, component: str) -> list[dict[str, Any]]:
    ports = [{"name": "metrics", "containerPort": HTTP_PORTS[component], "protocol": "TCP"}]
    if component == "ingress":
        ports += [
            {"name": lst["name"], "containerPort": container_port(lst), "protocol": "TCP"}
            for lst in cluster.spec["ingress"]["listeners"]
        ]
    if component == "policy":
        ports.append({"name": "grpc", "containerPort": POLICY_PORT, "protocol": "TCP"})
    return ports


def _volumes(cluster: Cluster, component: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    volumes: list[dict[str, Any]] = [
        {"name": "config", "configMap": {"name": cluster.child("config")}},
        {"name": "state", "emptyDir": {}},
        {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}},
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "config", "mountPath": CONFIG_PATH, "subPath": "elemta.toml", "readOnly": True},
        {"name": "state", "mountPath": STATE_DIR},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    if component == "ingress":
        volumes.append(
            {"name": "smtp-tls", "secret": {"secretName": smtp_secret_name(cluster)}},
        )
        # A directory mount (not subPath), so that a renewed certificate appears in the pod.
        mounts.append({"name": "smtp-tls", "mountPath": SMTP_TLS_DIR, "readOnly": True})
    if cluster.internal_tls:
        # Every service checks NATS with the CA in it; ingress also presents it to policy.
        volumes.append(
            {"name": "client-tls", "secret": {"secretName": cluster.child("client-tls")}}
        )
        mounts.append({"name": "client-tls", "mountPath": CLIENT_TLS_DIR, "readOnly": True})
        if component == "policy":
            policy_secret = {"secretName": cluster.child("policy-tls")}
            volumes.append({"name": "policy-tls", "secret": policy_secret})
            mounts.append({"name": "policy-tls", "mountPath": POLICY_TLS_DIR, "readOnly": True})
    nats = cluster.spec["nats"]
    if nats["mode"] == "external" and nats.get("credentialsSecret") and cluster.nats_secret_keys:
        creds: dict[str, Any] = {
            "secretName": nats["credentialsSecret"]["name"],
            "defaultMode": 0o440,
        }
        volumes.append({"name": "nats-credentials", "secret": creds})
        mounts.append({"name": "nats-credentials", "mountPath": NATS_SECRET_DIR, "readOnly": True})
    keys = [k for k in cluster.spec["dkim"]["keys"] if k["sign"]]
    if component == "policy" and keys:
        sources = [
            {
                "secret": {
                    "name": dkim_secret_name(cluster, key),
                    "items": [
                        {"key": "private.pem", "path": dkim_file(key).rsplit("/", 1)[1]},
                    ],
                }
            }
            for key in keys
        ]
        volumes.append({"name": "dkim", "projected": {"sources": sources, "defaultMode": 0o440}})
        mounts.append({"name": "dkim", "mountPath": DKIM_DIR, "readOnly": True})
    return volumes, mounts


def _container(cluster: Cluster, component: str, mounts: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "name": component,
        "image": cluster.image,
        "imagePullPolicy": cluster.spec["imagePullPolicy"],
        "args": ["serve", component],
        "env": [
            {"name": "ELEMTA_CONFIG", "value": CONFIG_PATH},
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {
                "name": "POD_NAMESPACE",
                "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}},
            },
            *secret_env(cluster),
        ],
        "ports": _ports(cluster, component),
        "resources": cluster.spec[component].get("resources") or _DEFAULT_RESOURCES[component],
        "volumeMounts": mounts,
        "startupProbe": {
            "httpGet": {"path": "/healthz", "port": "metrics"},
            "periodSeconds": 2,
            "failureThreshold": 60,
        },
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": "metrics"},
            "periodSeconds": 10,
            "timeoutSeconds": 3,
            "failureThreshold": 3,
        },
        "readinessProbe": {
            "httpGet": {"path": "/readyz", "port": "metrics"},
            "periodSeconds": 5,
            "timeoutSeconds": 3,
            "failureThreshold": 2,
        },
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }


def _pod_template(cluster: Cluster, component: str, config_hash: str) -> dict[str, Any]:
    volumes, mounts = _volumes(cluster, component)
    spec: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": _GRACE[component],
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS,
            "runAsGroup": RUN_AS,
            "fsGroup": RUN_AS,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [_container(cluster, component, mounts)],
        "volumes": volumes,
    }
    if cluster.spec.get("imagePullSecrets"):
        spec["imagePullSecrets"] = [{"name": n} for n in cluster.spec["imagePullSecrets"]]
    if component in ("ingress", "delivery", "policy", "queue"):
        # Spread replicas over nodes, so one node going away leaves the others serving.
        spec["topologySpreadConstraints"] = [
            {
                "maxSkew": 1,
                "topologyKey": "kubernetes.io/hostname",
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": cluster.selector(component)},
            }
        ]
    template = {
        "metadata": {
            "labels": cluster.labels(component),
            "annotations": {CONFIG_HASH_ANNOTATION: config_hash},
        },
        "spec": spec,
    }
    return deep_merge(template, cluster.spec[component].get("podTemplate") or {})


def render_deployment(cluster: Cluster, component: str, config_hash: str) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "selector": {"matchLabels": cluster.selector(component)},
        "template": _pod_template(cluster, component, config_hash),
        "revisionHistoryLimit": 5,
    }
    # Surge first: a rolling update never lowers the serving capacity. For the
    # queue the new pod starts as a standby; the old active one releases its
    # lease when it stops, and a standby takes over at once.
    spec["strategy"] = {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    replicas = _replicas(cluster, component)
    if replicas is not None:
        spec["replicas"] = replicas
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": cluster.metadata(component, component),
        "spec": spec,
    }


def render_deployments(cluster: Cluster, config_hash: str) -> list[dict[str, Any]]:
    return [render_deployment(cluster, c, config_hash) for c in COMPONENTS]


def render_pdbs(cluster: Cluster) -> list[dict[str, Any]]:
    """At most one pod of each scaled service is evicted at a time (drains, upgrades)."""
    out = []
    for component in ("ingress", "policy", "queue", "delivery"):
        replicas = _replicas(cluster, component)
        if replicas is not None and replicas < 2:
            continue
        out.append(
            {
                "apiVersion": "policy/v1",
                "kind": "PodDisruptionBudget",
                "metadata": cluster.metadata(component, component),
                "spec": {
                    "maxUnavailable": 1,
                    "selector": {"matchLabels": cluster.selector(component)},
                },
            }
        )
    return out
