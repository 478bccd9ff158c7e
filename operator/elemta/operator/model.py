"""One ``ElemtaCluster`` as the renderers see it: names, labels, the defaulted spec.

Every child is named ``<cluster>-<part>`` and labelled with the standard
``app.kubernetes.io`` labels, so that ``kubectl get all -l
app.kubernetes.io/instance=<cluster>`` shows the whole installation and the
operator can find (and prune) what it made.
"""

from __future__ import annotations

import copy
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .schema import GROUP, KIND, VERSION, apply_defaults, spec_schema

__all__ = [
    "COMPONENTS",
    "MANAGED_BY",
    "PAUSE_ANNOTATION",
    "Capabilities",
    "Cluster",
    "deep_merge",
    "dns_label",
]

#: The Elemta services, each one Deployment.
COMPONENTS = ("ingress", "policy", "queue", "delivery", "api")
MANAGED_BY = "elemta-operator"
#: ``elemta.io/paused: "true"`` stops reconciliation (as Strimzi's annotation does).
PAUSE_ANNOTATION = "elemta.io/paused"
CONFIG_HASH_ANNOTATION = "elemta.io/config-hash"


@dataclass(frozen=True)
class Capabilities:
    """What the cluster offers beyond core Kubernetes (found by API discovery)."""

    keda: bool = False
    cert_manager: bool = False
    service_monitor: bool = False


@dataclass(frozen=True)
class Cluster:
    """The parts of an ``ElemtaCluster`` object that rendering needs."""

    name: str
    namespace: str
    uid: str
    generation: int
    spec: dict[str, Any]
    annotations: dict[str, str] = field(default_factory=dict)
    default_image: str = "elemta:latest"
    #: Keys present in the external NATS credentials Secret (read by the reconcile).
    nats_secret_keys: frozenset[str] = frozenset()
    #: The managed NATS certificate's expiry, so that a renewal rolls the servers.
    nats_tls_stamp: str = ""

    @classmethod
    def from_body(cls, body: Mapping[str, Any], default_image: str) -> Cluster:
        meta = body.get("metadata", {})
        spec = apply_defaults(spec_schema()["properties"]["spec"], dict(body.get("spec", {})))
        return cls(
            name=meta["name"],
            namespace=meta.get("namespace") or "default",
            uid=meta.get("uid", ""),
            generation=int(meta.get("generation") or 0),
            spec=copy.deepcopy(spec),
            annotations=dict(meta.get("annotations") or {}),
            default_image=default_image,
        )

    @property
    def internal_tls(self) -> bool:
        """mTLS to policy and, when managed, TLS with a password to NATS."""
        return bool(self.spec["tls"]["internal"])

    @property
    def paused(self) -> bool:
        return self.annotations.get(PAUSE_ANNOTATION, "").lower() in ("true", "1", "yes")

    @property
    def image(self) -> str:
        return str(self.spec.get("image") or self.default_image)

    def child(self, part: str) -> str:
        """The name of a child object: ``<cluster>-<part>``, shortened to a DNS label."""
        name = f"{self.name}-{part}"
        if len(name) <= 63:
            return name
        digest = hashlib.sha256(name.encode()).hexdigest()[:8]
        return f"{name[:54].rstrip('-')}-{digest}"

    def labels(self, component: str = "") -> dict[str, str]:
        labels = {
            "app.kubernetes.io/name": "elemta",
            "app.kubernetes.io/instance": self.name,
            "app.kubernetes.io/managed-by": MANAGED_BY,
        }
        if component:
            labels["app.kubernetes.io/component"] = component
        return labels

    def selector(self, component: str) -> dict[str, str]:
        """The labels a component's pods are selected by (never changed after creation)."""
        return {
            "app.kubernetes.io/name": "elemta",
            "app.kubernetes.io/instance": self.name,
            "app.kubernetes.io/component": component,
        }

    def owner_reference(self) -> dict[str, Any]:
        return {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": KIND,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }

    def metadata(self, part: str, component: str = "", **extra: Any) -> dict[str, Any]:
        """Metadata of a child: name, namespace, labels, owner reference."""
        meta: dict[str, Any] = {
            "name": self.child(part),
            "namespace": self.namespace,
            "labels": self.labels(component),
            "ownerReferences": [self.owner_reference()],
        }
        meta.update(extra)
        return meta

    def service_host(self, part: str) -> str:
        """The in-cluster DNS name of the child Service ``part``."""
        return f"{self.child(part)}.{self.namespace}.svc"


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``override`` merged into ``base``: tables merge, anything else replaces."""
    out = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


_LABEL_UNSAFE = re.compile(r"[^a-z0-9-]+")


def dns_label(text: str) -> str:
    """A string made safe for a name part: lower case, dots and others to dashes."""
    return _LABEL_UNSAFE.sub("-", text.lower()).strip("-")
