"""The operator tests' harness: submit ElemtaClusters, run the handlers, read children."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

import kopf

from elemta.operator.handlers import reconcile_cluster, resync_cluster
from elemta.operator.kube import Kube

NAMESPACE = "mail"
IMAGE = "registry.example/elemta:1.0"


class Clock:
    """An injected clock the tests move forward."""

    def __init__(self) -> None:
        self.now = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, days: float) -> None:
        self.now += dt.timedelta(days=days)


class Harness:
    """Submit ElemtaClusters to the emulator and run the operator's handlers on them."""

    def __init__(self, kube: Kube, memo: kopf.Memo) -> None:
        self.kube = kube
        self.memo = memo
        self.log = logging.getLogger("elemta.operator.test")

    async def submit(self, spec: dict[str, Any], name: str = "mail") -> dict[str, Any]:
        return await self.kube.create(
            {
                "apiVersion": "elemta.io/v1alpha1",
                "kind": "ElemtaCluster",
                "metadata": {
                    "name": name,
                    "namespace": NAMESPACE,
                    "uid": f"uid-{name}",
                    "generation": 1,
                },
                "spec": spec,
            }
        )

    async def edit(self, name: str, patch: dict[str, Any]) -> None:
        """Change the object as ``kubectl edit`` would (the API server bumps generation)."""
        current = await self.get("ElemtaCluster", name)
        generation = current["metadata"]["generation"]
        if "spec" in patch:
            patch = {
                **patch,
                "metadata": {**patch.get("metadata", {}), "generation": generation + 1},
            }
        await self.kube.patch("ElemtaCluster", NAMESPACE, name, patch)

    async def reconcile(self, name: str = "mail", *, timer: bool = False) -> dict[str, Any]:
        body = await self.get("ElemtaCluster", name)
        handler = resync_cluster if timer else reconcile_cluster
        await handler(body=kopf.Body(body), memo=self.memo, logger=self.log)
        return await self.get("ElemtaCluster", name)

    async def get(self, kind: str, name: str) -> dict[str, Any]:
        obj = await self.kube.get(kind, NAMESPACE, name)
        assert obj is not None, f"{kind} {name} does not exist"
        return obj

    async def find(self, kind: str, name: str) -> dict[str, Any] | None:
        return await self.kube.get(kind, NAMESPACE, name)

    async def events(self) -> list[tuple[str, str]]:
        return [(e["reason"], e["message"]) for e in await self.kube.list("Event", NAMESPACE)]

    async def play_controllers(self, name: str = "mail") -> None:
        """Do what the Deployment and StatefulSet controllers would: report pods ready."""
        for obj in await self.kube.list("Deployment", NAMESPACE):
            n = obj["spec"].get("replicas", 1)
            status = {"replicas": n, "readyReplicas": n, "availableReplicas": n}
            await self.kube.patch(
                "Deployment", NAMESPACE, obj["metadata"]["name"], {"status": status}
            )
        for obj in await self.kube.list("StatefulSet", NAMESPACE):
            n = obj["spec"]["replicas"]
            await self.kube.patch(
                "StatefulSet", NAMESPACE, obj["metadata"]["name"], {"status": {"readyReplicas": n}}
            )
