"""Validate manifests against the Kubernetes schemas (PyPI ``kubernetes-validate``).

Built-in kinds are checked strictly (unknown fields refused) against the
Kubernetes 1.37 schemas; ``ElemtaCluster`` against its own CRD. Kinds from other
projects' CRDs (KEDA, cert-manager, Prometheus Operator) have no schema there
and are checked for the fields every object needs.
"""

from __future__ import annotations

from typing import Any

import kubernetes_validate

from .crd_validation import validate as validate_cluster

VERSION = "1.37.0"
FOREIGN = {"ScaledObject", "Certificate", "ServiceMonitor", "PrometheusRule"}


def problems(manifest: dict[str, Any]) -> list[str]:
    kind = manifest.get("kind", "")
    where = f"{kind} {manifest.get('metadata', {}).get('name')}"
    if kind == "ElemtaCluster":
        return [f"{where}: {e}" for e in validate_cluster(manifest)]
    if kind in FOREIGN:
        missing = [k for k in ("apiVersion", "metadata", "spec") if k not in manifest]
        return [f"{where}: no {k}" for k in missing]
    try:
        kubernetes_validate.validate(manifest, VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        path = ".".join(str(p) for p in exc.path)
        return [f"{where}: {path}: {exc.message}"]
    return []
