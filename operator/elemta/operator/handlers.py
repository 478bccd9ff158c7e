"""kopf handlers: thin wiring from kopf's events to :func:`~.reconcile.reconcile`.

Create, update and resume run the same reconcile; a timer runs it again every
``ELEMTA_OPERATOR_RESYNC`` seconds (default 60) to repair drift (someone edited
or deleted a child). Progress and the diff base live in annotations under
``elemta.io``; the status is written by the reconcile itself, explicitly.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import kopf

from .depth import queue_depth
from .kube import Kube
from .reconcile import Operator, reconcile
from .schema import GROUP, PLURAL, VERSION

__all__ = ["configure", "reconcile_cluster", "resync_cluster"]

RESYNC_SECONDS = float(os.environ.get("ELEMTA_OPERATOR_RESYNC", "60"))


def _operator(memo: Any) -> Operator:
    op = getattr(memo, "operator", None)
    if not isinstance(op, Operator):
        raise kopf.PermanentError("the operator was not started (no API client)")
    return op


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    """Settings, and the API client for children (unless a test supplied one)."""
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=GROUP)
    settings.persistence.finalizer = f"{GROUP}/operator"
    settings.posting.level = logging.WARNING  # our own Events say what changed
    settings.watching.server_timeout = 300
    settings.execution.max_workers = 4
    if getattr(memo, "operator", None) is None:
        info = kopf.login_with_service_account(settings=settings) or kopf.login_with_kubeconfig(
            settings=settings
        )
        if info is None:
            raise kopf.PermanentError("no service account and no kubeconfig to log in with")
        memo.operator = Operator(
            kube=Kube.from_connection_info(info),
            default_image=os.environ.get("ELEMTA_OPERATOR_IMAGE", "elemta:latest"),
            queue_depth=queue_depth,
        )


@kopf.on.cleanup()
async def close(memo: kopf.Memo, **_: Any) -> None:
    op = getattr(memo, "operator", None)
    if isinstance(op, Operator):
        await op.kube.close()


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL)
async def reconcile_cluster(
    body: kopf.Body, memo: kopf.Memo, logger: logging.Logger | Any, **_: Any
) -> None:
    await reconcile(body, _operator(memo), logger)


@kopf.timer(GROUP, VERSION, PLURAL, interval=RESYNC_SECONDS, initial_delay=RESYNC_SECONDS)
async def resync_cluster(
    body: kopf.Body, memo: kopf.Memo, logger: logging.Logger | Any, **_: Any
) -> None:
    await reconcile(body, _operator(memo), logger)


@kopf.on.probe(id="api")
async def api_reachable(memo: kopf.Memo, **_: Any) -> bool:
    """Liveness: the operator can still talk to the API server."""
    op = _operator(memo)
    await op.kube.has_kind("ElemtaCluster")
    return True
