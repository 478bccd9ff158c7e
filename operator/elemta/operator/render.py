"""Everything an ``ElemtaCluster`` becomes, as manifests: one pure function.

:func:`render` takes the cluster and what the Kubernetes cluster offers
(:class:`~elemta.operator.model.Capabilities`) and returns the desired children.
Secrets whose content the operator generates (CA, certificates, DKIM keys) are
not here: they are made once and kept (see :mod:`elemta.operator.keys`).
"""

from __future__ import annotations

from typing import Any

from .configfile import config_hash, render_config_text
from .model import Capabilities, Cluster
from .nats import render_nats
from .network import render_network_policies, render_services
from .scaling import render_autoscaler, render_service_monitor
from .workloads import render_deployments, render_pdbs, smtp_secret_name

__all__ = ["render", "render_certificates", "render_configmap"]


def render_configmap(cluster: Cluster) -> tuple[dict[str, Any], str]:
    """The ConfigMap holding ``elemta.toml``, and the hash of that text."""
    text = render_config_text(cluster)
    return (
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": cluster.metadata("config", "config"),
            "data": {"elemta.toml": text},
        },
        config_hash(text),
    )


def render_certificates(cluster: Cluster, caps: Capabilities) -> list[dict[str, Any]]:
    """cert-manager's Certificate for the SMTP certificate (``tls.mode: certManager``)."""
    tls = cluster.spec["tls"]
    if tls["mode"] != "certManager" or not caps.cert_manager:
        return []
    return [
        {
            "apiVersion": "cert-manager.io/v1",
            "kind": "Certificate",
            "metadata": cluster.metadata("smtp", "ingress"),
            "spec": {
                "secretName": smtp_secret_name(cluster),
                "dnsNames": [cluster.spec["hostname"]],
                "issuerRef": dict(tls["issuerRef"]),
                "duration": f"{tls['validityDays'] * 24}h",
                "renewBefore": f"{tls['renewBeforeDays'] * 24}h",
                "privateKey": {"algorithm": "RSA", "size": 2048, "rotationPolicy": "Always"},
                "usages": ["server auth", "digital signature", "key encipherment"],
            },
        }
    ]


def render(cluster: Cluster, caps: Capabilities) -> list[dict[str, Any]]:
    configmap, digest = render_configmap(cluster)
    return [
        configmap,
        *render_services(cluster),
        *render_deployments(cluster, digest),
        *render_pdbs(cluster),
        *render_network_policies(cluster),
        *render_nats(cluster),
        *render_autoscaler(cluster, caps),
        *render_service_monitor(cluster, caps),
        *render_certificates(cluster, caps),
    ]
