"""kopf itself runs the operator's handlers against the kmock Kubernetes API emulator.

The other tests call the handlers directly; this one lets kopf discover the
resource, watch it, dispatch create and the timer, and store its progress.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import kopf
from operator_harness import NAMESPACE, Harness

from elemta.operator import handlers
from elemta.operator.schema import GROUP, PLURAL, VERSION


async def wait_for(check: Any, within: float = 60.0) -> Any:
    deadline = asyncio.get_running_loop().time() + within
    while (found := await check()) is None:
        assert asyncio.get_running_loop().time() < deadline, "not reconciled in time"
        await asyncio.sleep(0.2)
    return found


async def test_kopf_dispatches_creation_to_the_reconcile(
    operator: Harness, memo: kopf.Memo, kmock: Any
) -> None:
    info = kmock.resources[f"{GROUP}/{VERSION}/{PLURAL}"]
    info.kind, info.namespaced = "ElemtaCluster", True
    info.verbs = {"get", "list", "watch", "patch", "create", "delete"}
    info.subresources = {"status"}
    # kopf also watches for CRDs and namespaces appearing.
    for backbone, kind in [
        ("apiextensions.k8s.io/v1/customresourcedefinitions", "CustomResourceDefinition"),
        ("v1/namespaces", "Namespace"),
    ]:
        kmock.resources[backbone].kind = kind
        kmock.resources[backbone].verbs = {"list", "watch", "get"}
    kmock.objects["v1/namespaces", None, NAMESPACE] = {"metadata": {"name": NAMESPACE}}

    registry = kopf.OperatorRegistry()
    kopf.on.login(registry=registry)(
        lambda **_: kopf.ConnectionInfo(server=str(kmock.url), insecure=True)
    )
    kopf.on.startup(registry=registry)(handlers.configure)
    for decorator in (kopf.on.resume, kopf.on.create, kopf.on.update):
        decorator(GROUP, VERSION, PLURAL, registry=registry)(handlers.reconcile_cluster)

    stop = asyncio.Event()
    task = asyncio.create_task(
        kopf.operator(
            registry=registry,
            memo=memo,
            standalone=True,
            clusterwide=True,
            stop_flag=stop,
        )
    )
    try:
        await operator.submit({"hostname": "mx.example.org", "localDomains": ["example.org"]})
        deployment = await wait_for(lambda: operator.find("Deployment", "mail-delivery"))
        assert deployment["metadata"]["ownerReferences"][0]["kind"] == "ElemtaCluster"
        cluster = await wait_for(
            lambda: _with_status(operator),
        )
        assert cluster["status"]["observedGeneration"] == 1
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 30)


async def _with_status(operator: Harness) -> dict[str, Any] | None:
    cluster = await operator.find("ElemtaCluster", "mail")
    return cluster if cluster and (cluster.get("status") or {}).get("conditions") else None
