"""The status of an ``ElemtaCluster``: conditions in the Kubernetes format, counts.

Conditions (``type``, ``status``, ``reason``, ``message``,
``lastTransitionTime``, ``observedGeneration``): one ``<Component>Available``
per service, ``TLSReady``, ``NATSReady``, and ``Ready`` when all of them are
true. ``lastTransitionTime`` moves only when a condition's status changes, as
``kubectl wait --for=condition=Ready`` and alerting expect. Pure functions: the
reconcile gathers the facts and passes the clock.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

__all__ = ["Check", "component_check", "conditions", "replica_summary"]


@dataclass(frozen=True)
class Check:
    """One fact as a condition: ``ok`` True/False/None (unknown)."""

    type: str
    ok: bool | None
    reason: str
    message: str


def component_check(component: str, deployment: dict[str, Any] | None) -> Check:
    ctype = f"{component.capitalize()}Available"
    if deployment is None:
        return Check(ctype, False, "NotCreated", f"Deployment for {component} does not exist yet")
    status = deployment.get("status") or {}
    wanted = deployment.get("spec", {}).get("replicas")
    available = int(status.get("availableReplicas") or 0)
    if available >= 1:
        return Check(ctype, True, "MinimumReplicasAvailable", f"{available} available")
    if wanted == 0:
        return Check(ctype, False, "ScaledToZero", f"{component} is scaled to zero")
    return Check(ctype, False, "NoReplicasAvailable", f"no {component} pod is ready")


def conditions(
    checks: list[Check],
    previous: list[dict[str, Any]],
    generation: int,
    now: dt.datetime,
) -> list[dict[str, Any]]:
    """The condition list for these checks, keeping transition times that did not change."""
    old = {c.get("type"): c for c in previous}
    all_ok = all(c.ok for c in checks)
    failing = [c.type for c in checks if not c.ok]
    ready = Check(
        "Ready",
        all_ok,
        "AllComponentsReady" if all_ok else "ComponentsNotReady",
        "every component is ready" if all_ok else "not ready: " + ", ".join(failing),
    )
    out = []
    stamp = now.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    for check in [ready, *checks]:
        status = "Unknown" if check.ok is None else ("True" if check.ok else "False")
        before = old.get(check.type)
        since = before["lastTransitionTime"] if before and before.get("status") == status else stamp
        out.append(
            {
                "type": check.type,
                "status": status,
                "reason": check.reason,
                "message": check.message,
                "lastTransitionTime": since,
                "observedGeneration": generation,
            }
        )
    return out


def replica_summary(deployment: dict[str, Any] | None) -> dict[str, Any]:
    """``{replicas, readyReplicas, summary}`` of a Deployment (for printer columns)."""
    status = (deployment or {}).get("status") or {}
    wanted = int(((deployment or {}).get("spec") or {}).get("replicas") or 0)
    replicas = int(status.get("replicas") or 0)
    ready = int(status.get("readyReplicas") or 0)
    return {"replicas": replicas, "readyReplicas": ready, "summary": f"{ready}/{wanted}"}
