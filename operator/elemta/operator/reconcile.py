"""One level-based reconcile: make the children match the spec, then report.

Called for create, update and resume, and by the drift timer, with the same
body and the same outcome: the function looks at what exists, not at what
changed. Steps: stop at the pause annotation; find optional APIs (KEDA,
cert-manager, Prometheus Operator); issue keys and certificates; apply every
rendered child (create or patch); delete children no longer rendered; write the
status. Each change becomes an Event; a pass that changes nothing is silent.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from .keys import ensure_keys, tls_check
from .kube import Kube
from .model import COMPONENTS, MANAGED_BY, Capabilities, Cluster
from .records import dns_records
from .render import render
from .scaling import monitoring_endpoint
from .status import Check, component_check, conditions, replica_summary

__all__ = ["Operator", "PRUNED_KINDS", "reconcile"]

#: Kinds the operator deletes when they are no longer rendered (never Secrets: keys stay).
PRUNED_KINDS = (
    "Deployment",
    "StatefulSet",
    "Service",
    "ConfigMap",
    "PodDisruptionBudget",
    "NetworkPolicy",
    "HorizontalPodAutoscaler",
    "ScaledObject",
    "ServiceMonitor",
    "Certificate",
)
_OPTIONAL = {"ScaledObject", "ServiceMonitor", "Certificate"}


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass
class Operator:
    """What the handlers share: the API client, the default image, the clock."""

    kube: Kube
    default_image: str = "elemta:latest"
    clock: Callable[[], dt.datetime] = field(default=_utcnow)
    #: Messages waiting for delivery, or None when unknown (see :mod:`.depth`).
    queue_depth: Callable[[Cluster], Awaitable[int | None]] | None = None


async def _capabilities(kube: Kube) -> Capabilities:
    kube.forget_discovery()
    return Capabilities(
        keda=await kube.has_kind("ScaledObject"),
        cert_manager=await kube.has_kind("Certificate"),
        service_monitor=await kube.has_kind("ServiceMonitor"),
    )


async def _prune(
    kube: Kube, cluster: Cluster, caps: Capabilities, wanted: set[tuple[str, str]]
) -> list[str]:
    optional_present = {
        "ScaledObject": caps.keda,
        "ServiceMonitor": caps.service_monitor,
        "Certificate": caps.cert_manager,
    }
    removed = []
    labels = {
        "app.kubernetes.io/instance": cluster.name,
        "app.kubernetes.io/managed-by": MANAGED_BY,
    }
    for kind in PRUNED_KINDS:
        if kind in _OPTIONAL and not optional_present[kind]:
            continue
        for obj in await kube.list(kind, cluster.namespace, labels):
            name = obj["metadata"]["name"]
            owners = obj["metadata"].get("ownerReferences") or []
            if not any(o.get("uid") == cluster.uid for o in owners):
                continue  # another cluster's (same name, earlier incarnation) or adopted by hand
            if (kind, name) not in wanted:
                await kube.delete(kind, cluster.namespace, name)
                removed.append(f"{kind} {name}")
    return removed


async def _with_facts(kube: Kube, cluster: Cluster) -> Cluster:
    """What rendering needs from Secrets: which credentials exist, the NATS cert's age."""
    nats = cluster.spec["nats"]
    keys: frozenset[str] = frozenset()
    stamp = ""
    if nats["mode"] == "external" and nats.get("credentialsSecret"):
        secret = await kube.get("Secret", cluster.namespace, nats["credentialsSecret"]["name"])
        keys = frozenset(((secret or {}).get("data") or {}).keys())
    elif cluster.internal_tls:
        secret = await kube.get("Secret", cluster.namespace, cluster.child("nats-tls"))
        stamp = ((secret or {}).get("metadata", {}).get("annotations") or {}).get(
            "elemta.io/not-after", ""
        )
    return replace(cluster, nats_secret_keys=keys, nats_tls_stamp=stamp)


async def _nats_check(kube: Kube, cluster: Cluster) -> Check:
    nats = cluster.spec["nats"]
    if nats["mode"] == "external":
        secret = nats.get("credentialsSecret")
        if secret and await kube.get("Secret", cluster.namespace, secret["name"]) is None:
            return Check("NATSReady", False, "CredentialsMissing", f"no Secret {secret['name']}")
        return Check("NATSReady", True, "External", f"external NATS at {nats['url']}")
    sts = await kube.get("StatefulSet", cluster.namespace, cluster.child("nats"))
    want = int(nats["replicas"])
    ready = int(((sts or {}).get("status") or {}).get("readyReplicas") or 0)
    # JetStream with R replicas needs a majority of servers to accept writes.
    quorum = want // 2 + 1
    if ready >= quorum:
        return Check("NATSReady", True, "QuorumReady", f"{ready}/{want} NATS servers ready")
    return Check("NATSReady", False, "NoQuorum", f"{ready}/{want} NATS servers ready")


def _smtp_endpoint(cluster: Cluster, service: dict[str, Any] | None) -> tuple[str, list[str]]:
    port = next(
        (lst["port"] for lst in cluster.spec["ingress"]["listeners"] if lst["port"] == 25),
        cluster.spec["ingress"]["listeners"][0]["port"],
    )
    lb = (((service or {}).get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    addresses = [i.get("ip") or i.get("hostname") for i in lb if i.get("ip") or i.get("hostname")]
    host = addresses[0] if addresses else cluster.service_host("smtp")
    return f"{host}:{port}", addresses


async def reconcile(body: Mapping[str, Any], op: Operator, logger: logging.Logger) -> None:
    kube = op.kube
    cluster = Cluster.from_body(body, op.default_image)
    previous = list(((body.get("status") or {}).get("conditions")) or [])
    now = op.clock()
    if cluster.paused:
        await _report_paused(kube, body, cluster, previous, now)
        return

    caps = await _capabilities(kube)
    keys = await ensure_keys(kube, cluster, now)
    for reason, message in keys.actions:
        logger.info("%s: %s", reason, message)
        await kube.event(body, reason, message, now=now)
    for reason, message in keys.warnings:
        logger.warning("%s: %s", reason, message)
        await kube.event(body, reason, message, warning=True, now=now)

    cluster = await _with_facts(kube, cluster)
    manifests = render(cluster, caps)
    for manifest in manifests:
        result = await kube.apply(manifest)
        if result != "unchanged":
            what = f"{manifest['kind']} {manifest['metadata']['name']}"
            logger.info("%s %s", result, what)
            await kube.event(body, result.capitalize(), what, now=now)
    wanted = {(m["kind"], m["metadata"]["name"]) for m in manifests}
    for what in await _prune(kube, cluster, caps, wanted):
        logger.info("deleted %s", what)
        await kube.event(body, "Deleted", what, now=now)
    if cluster.spec["tls"]["mode"] == "certManager" and not caps.cert_manager:
        await kube.event(
            body, "CertManagerMissing", "tls.mode is certManager", warning=True, now=now
        )

    tls = await tls_check(kube, cluster, now)
    await _write_status(kube, body, cluster, caps, tls, keys.dkim_txt, previous, now, op)


async def _write_status(
    kube: Kube,
    body: Mapping[str, Any],
    cluster: Cluster,
    caps: Capabilities,
    tls: Check,
    dkim_txt: dict[tuple[str, str], str],
    previous: list[dict[str, Any]],
    now: dt.datetime,
    op: Operator,
) -> None:
    deployments = {
        c: await kube.get("Deployment", cluster.namespace, cluster.child(c)) for c in COMPONENTS
    }
    checks = [component_check(c, deployments[c]) for c in COMPONENTS]
    checks.append(tls)
    checks.append(await _nats_check(kube, cluster))
    smtp = await kube.get("Service", cluster.namespace, cluster.child("smtp"))
    endpoint, addresses = _smtp_endpoint(cluster, smtp)
    status: dict[str, Any] = {
        "observedGeneration": cluster.generation,
        "conditions": conditions(checks, previous, cluster.generation, now),
        "smtpEndpoint": endpoint,
        "dnsRecords": dns_records(cluster, dkim_txt, addresses),
        "autoscaler": _autoscaler_kind(cluster, caps),
    }
    for c in COMPONENTS:
        status[c] = replica_summary(deployments[c])
    status["delivery"]["selector"] = ",".join(
        f"{k}={v}" for k, v in cluster.selector("delivery").items()
    )
    if op.queue_depth is not None:
        depth = await op.queue_depth(cluster)
        if depth is not None:
            status["queueDepth"] = depth
    await kube.patch(
        "ElemtaCluster", cluster.namespace, cluster.name, {"status": status}, sub="status"
    )


def _autoscaler_kind(cluster: Cluster, caps: Capabilities) -> str:
    if not cluster.spec["delivery"]["autoscaling"]["enabled"]:
        return "none"
    return "keda" if caps.keda and monitoring_endpoint(cluster) else "hpa"


async def _report_paused(
    kube: Kube,
    body: Mapping[str, Any],
    cluster: Cluster,
    previous: list[dict[str, Any]],
    now: dt.datetime,
) -> None:
    stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    was_paused = any(
        c.get("type") == "ReconciliationPaused" and c.get("status") == "True" for c in previous
    )
    kept = [c for c in previous if c.get("type") != "ReconciliationPaused"]
    paused = {
        "type": "ReconciliationPaused",
        "status": "True",
        "reason": "PauseAnnotation",
        "message": "elemta.io/paused is set; the operator changes nothing",
        "lastTransitionTime": stamp,
        "observedGeneration": cluster.generation,
    }
    if was_paused:
        return
    await kube.patch(
        "ElemtaCluster",
        cluster.namespace,
        cluster.name,
        {"status": {"conditions": [*kept, paused]}},
        sub="status",
    )
    await kube.event(body, "Paused", "reconciliation paused by annotation", now=now)
