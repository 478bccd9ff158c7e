"""The managed NATS JetStream: a StatefulSet of 1, 3 or 5 servers for one cluster.

File storage on a PersistentVolumeClaim per server, ``sync_interval: always``
(every write is fsynced before the PubAck, the durability contract), streams
replicated over the servers (``nats.replicas`` in the rendered config), lame-duck
mode on SIGTERM so clients move to another server before this one stops.
"""

from __future__ import annotations

from typing import Any

from .configfile import config_hash
from .model import CONFIG_HASH_ANNOTATION, Cluster

__all__ = ["render_nats"]

_UID = 1000


def render_nats_config(cluster: Cluster) -> str:
    nats = cluster.spec["nats"]
    replicas = int(nats["replicas"])
    headless = f"{cluster.child('nats-headless')}.{cluster.namespace}.svc"
    lines = [
        "# Rendered by the Elemta operator.",
        "port: 4222",
        "http_port: 8222",
        'pid_file: "/tmp/nats.pid"',
        "server_name: $POD_NAME",
        "lame_duck_duration: 30s",
        "lame_duck_grace_period: 10s",
        "max_payload: 8MB",
        "jetstream {",
        "  store_dir: /data",
        "  sync_interval: always",
        "}",
    ]
    tls = [
        "  tls {",
        '    cert_file: "/etc/nats/tls/tls.crt"',
        '    key_file: "/etc/nats/tls/tls.key"',
        '    ca_file: "/etc/nats/tls/ca.crt"',
        "    timeout: 5",
        "  }",
    ]
    if cluster.internal_tls:
        # Clients: TLS and the generated password; monitoring (8222) stays plain HTTP
        # inside the NetworkPolicy, for probes and KEDA.
        lines += ["tls {", *[t[2:] for t in tls[1:-1]], "}"]
        lines += ["authorization {", "  user: elemta", "  password: $NATS_PASSWORD", "}"]
    if replicas > 1:
        routes = ", ".join(
            f"nats://{cluster.child('nats')}-{i}.{headless}:6222" for i in range(replicas)
        )
        lines += ["cluster {", f"  name: {cluster.name}", "  port: 6222", f"  routes: [{routes}]"]
        lines += tls if cluster.internal_tls else []
        lines += ["}"]
    return "\n".join(lines) + "\n"


def _password_env(cluster: Cluster) -> list[dict[str, Any]]:
    if not cluster.internal_tls:
        return []
    ref = {"secretKeyRef": {"name": cluster.child("nats-auth"), "key": "password"}}
    return [{"name": "NATS_PASSWORD", "valueFrom": ref}]


def render_nats(cluster: Cluster) -> list[dict[str, Any]]:
    if cluster.spec["nats"]["mode"] != "managed":
        return []
    nats = cluster.spec["nats"]
    storage = nats["storage"]
    pvc_spec: dict[str, Any] = {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": storage["size"]}},
    }
    if storage.get("storageClassName"):
        pvc_spec["storageClassName"] = storage["storageClassName"]
    conf_text = render_nats_config(cluster)
    config = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": cluster.metadata("nats-config", "nats"),
        "data": {"nats.conf": conf_text},
    }
    ports = [
        {"name": "client", "port": 4222, "targetPort": "client"},
        {"name": "cluster", "port": 6222, "targetPort": "cluster"},
        {"name": "monitor", "port": 8222, "targetPort": "monitor"},
    ]
    client_svc = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": cluster.metadata("nats", "nats"),
        "spec": {"type": "ClusterIP", "selector": cluster.selector("nats"), "ports": ports},
    }
    headless_svc = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": cluster.metadata("nats-headless", "nats"),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": cluster.selector("nats"),
            "ports": ports,
        },
    }
    resources = nats.get("resources") or {
        "requests": {"cpu": "200m", "memory": "256Mi"},
        "limits": {"memory": "1Gi"},
    }
    # Go collects harder near the container's limit instead of letting the heap
    # grow to twice what is live (and the pod be OOM-killed).
    memory_limit = (
        [
            {
                "name": "GOMEMLIMIT",
                "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1"}},
            }
        ]
        if (resources.get("limits") or {}).get("memory")
        else []
    )
    container = {
        "name": "nats",
        "image": nats["image"],
        "args": ["--config", "/etc/nats/nats.conf"],
        "env": [
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            *_password_env(cluster),
            *memory_limit,
        ],
        "ports": [
            {"name": "client", "containerPort": 4222},
            {"name": "cluster", "containerPort": 6222},
            {"name": "monitor", "containerPort": 8222},
        ],
        "resources": resources,
        "volumeMounts": [
            {"name": "config", "mountPath": "/etc/nats", "readOnly": True},
            {"name": "data", "mountPath": "/data"},
            {"name": "tmp", "mountPath": "/tmp"},
            *(
                [{"name": "tls", "mountPath": "/etc/nats/tls", "readOnly": True}]
                if cluster.internal_tls
                else []
            ),
        ],
        "startupProbe": {
            "httpGet": {"path": "/healthz?js-enabled-only=true", "port": "monitor"},
            "periodSeconds": 5,
            "failureThreshold": 90,
        },
        "livenessProbe": {
            "httpGet": {"path": "/healthz?js-enabled-only=true", "port": "monitor"},
            "periodSeconds": 30,
            "timeoutSeconds": 5,
        },
        "readinessProbe": {
            "httpGet": {"path": "/healthz?js-server-only=true", "port": "monitor"},
            "periodSeconds": 10,
            "timeoutSeconds": 5,
        },
        "lifecycle": {"preStop": {"exec": {"command": ["nats-server", "-sl=ldm=/tmp/nats.pid"]}}},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    statefulset = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": cluster.metadata("nats", "nats"),
        "spec": {
            "replicas": int(nats["replicas"]),
            "serviceName": cluster.child("nats-headless"),
            "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": cluster.selector("nats")},
            "template": {
                "metadata": {
                    "labels": cluster.labels("nats"),
                    # A renewed certificate rolls the servers one by one (they read
                    # certificates at start), each in lame-duck mode first.
                    "annotations": {
                        CONFIG_HASH_ANNOTATION: config_hash(conf_text + cluster.nats_tls_stamp)
                    },
                },
                "spec": {
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "terminationGracePeriodSeconds": 60,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": _UID,
                        "runAsGroup": _UID,
                        "fsGroup": _UID,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "topologySpreadConstraints": [
                        {
                            "maxSkew": 1,
                            "topologyKey": "kubernetes.io/hostname",
                            "whenUnsatisfiable": "DoNotSchedule",
                            "labelSelector": {"matchLabels": cluster.selector("nats")},
                        }
                    ],
                    "containers": [container],
                    "volumes": [
                        {"name": "config", "configMap": {"name": cluster.child("nats-config")}},
                        {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}},
                        *(
                            [{"name": "tls", "secret": {"secretName": cluster.child("nats-tls")}}]
                            if cluster.internal_tls
                            else []
                        ),
                    ],
                },
            },
            "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": pvc_spec}],
        },
    }
    pdb = {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": cluster.metadata("nats", "nats"),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": cluster.selector("nats")}},
    }
    return [config, client_svc, headless_svc, statefulset, pdb]
