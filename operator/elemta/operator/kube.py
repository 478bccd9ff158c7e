"""A small Kubernetes API client: the handful of REST calls the operator makes.

kopf watches and patches the ``ElemtaCluster`` itself; the children are written
here over aiohttp (already a dependency) with the credentials kopf logs in with,
rather than through a generated client of every API. Children are applied by
create-or-patch: read the object, create it when absent, send a JSON merge patch
(``fieldManager=elemta-operator``) only when the desired fields differ, so the
drift timer is quiet when nothing drifted and fields other controllers own
(an autoscaler's ``replicas``, a Service's ``clusterIP``) are left alone.

Errors: :class:`KubeError` carries the API's status code; 404 on a read is
``None`` (absent), 404 on a list is empty (the API is not installed).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ssl
from collections.abc import Mapping
from typing import Any

import aiohttp

__all__ = ["KINDS", "FIELD_MANAGER", "Kube", "KubeError", "is_subset"]

FIELD_MANAGER = "elemta-operator"

#: kind -> (apiVersion, plural) of every kind the operator reads or writes.
KINDS: dict[str, tuple[str, str]] = {
    "ConfigMap": ("v1", "configmaps"),
    "Secret": ("v1", "secrets"),
    "Service": ("v1", "services"),
    "Event": ("v1", "events"),
    "Deployment": ("apps/v1", "deployments"),
    "StatefulSet": ("apps/v1", "statefulsets"),
    "PodDisruptionBudget": ("policy/v1", "poddisruptionbudgets"),
    "HorizontalPodAutoscaler": ("autoscaling/v2", "horizontalpodautoscalers"),
    "NetworkPolicy": ("networking.k8s.io/v1", "networkpolicies"),
    "ScaledObject": ("keda.sh/v1alpha1", "scaledobjects"),
    "ServiceMonitor": ("monitoring.coreos.com/v1", "servicemonitors"),
    "Certificate": ("cert-manager.io/v1", "certificates"),
    "ElemtaCluster": ("elemta.io/v1alpha1", "elemtaclusters"),
}


class KubeError(Exception):
    """The API answered with an error status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status


def _path(kind: str, namespace: str | None, name: str | None = None, sub: str = "") -> str:
    api_version, plural = KINDS[kind]
    base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    path = f"{base}/namespaces/{namespace}/{plural}" if namespace else f"{base}/{plural}"
    if name:
        path += f"/{name}"
    if sub:
        path += f"/{sub}"
    return path


def is_subset(desired: Any, actual: Any) -> bool:
    """Whether every field of ``desired`` is in ``actual`` with the same value."""
    if isinstance(desired, Mapping):
        return isinstance(actual, Mapping) and all(
            k in actual and is_subset(v, actual[k]) for k, v in desired.items()
        )
    if isinstance(desired, list):
        return (
            isinstance(actual, list)
            and len(desired) == len(actual)
            and all(is_subset(d, a) for d, a in zip(desired, actual, strict=True))
        )
    return bool(desired == actual)


class Kube:
    """One API server; ``session`` is owned (and closed) by this client."""

    def __init__(
        self,
        server: str,
        *,
        headers: Mapping[str, str] | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.server = server.rstrip("/")
        self._headers = dict(headers or {})
        self._ssl = ssl_context
        self._session: aiohttp.ClientSession | None = None
        self._discovered: dict[str, bool] = {}

    @classmethod
    def from_connection_info(cls, info: Any) -> Kube:
        """From a ``kopf.ConnectionInfo`` (what kopf's own login produced)."""
        context = info.as_ssl_context() if info.server.startswith("https") else None
        if context is not None and info.insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return cls(info.server, headers=info.as_http_headers(), ssl_context=context)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> Any:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                headers=self._headers, timeout=aiohttp.ClientTimeout(total=30)
            )
        headers = {"Content-Type": content_type, "Accept": "application/json"}
        async with self._session.request(
            method,
            self.server + path,
            json=body,
            params=params,
            headers=headers,
            ssl=self._ssl or True,
        ) as resp:
            if resp.status >= 400:
                try:
                    message = (await resp.json()).get("message", resp.reason)
                except (aiohttp.ContentTypeError, ValueError):
                    message = resp.reason or ""
                raise KubeError(resp.status, str(message))
            if resp.content_type == "application/json":
                return await resp.json()
            return None

    async def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            obj: dict[str, Any] = await self._request("GET", _path(kind, namespace, name))
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise
        return obj

    async def list(
        self, kind: str, namespace: str, labels: Mapping[str, str] | None = None
    ) -> list[dict[str, Any]]:
        params = {}
        if labels:
            params["labelSelector"] = ",".join(f"{k}={v}" for k, v in labels.items())
        try:
            answer = await self._request("GET", _path(kind, namespace), params=params)
        except KubeError as exc:
            if exc.status == 404:
                return []
            raise
        items: list[dict[str, Any]] = answer.get("items") or []
        # Filter here as well: the selector is a request, the match is ours to check.
        want = dict(labels or {})
        return [
            i
            for i in items
            if all((i.get("metadata", {}).get("labels") or {}).get(k) == v for k, v in want.items())
        ]

    async def create(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        created: dict[str, Any] = await self._request(
            "POST",
            _path(obj["kind"], meta.get("namespace")),
            body=obj,
            params={"fieldManager": FIELD_MANAGER},
        )
        return created

    async def patch(
        self, kind: str, namespace: str, name: str, patch: Mapping[str, Any], sub: str = ""
    ) -> dict[str, Any]:
        patched: dict[str, Any] = await self._request(
            "PATCH",
            _path(kind, namespace, name, sub),
            body=patch,
            params={"fieldManager": FIELD_MANAGER},
            content_type="application/merge-patch+json",
        )
        return patched

    async def delete(self, kind: str, namespace: str, name: str) -> None:
        try:
            await self._request(
                "DELETE", _path(kind, namespace, name), body={"propagationPolicy": "Background"}
            )
        except KubeError as exc:
            if exc.status != 404:
                raise

    async def apply(self, obj: Mapping[str, Any]) -> str:
        """Create or patch ``obj``: ``"created"``, ``"updated"`` or ``"unchanged"``."""
        meta = obj["metadata"]
        current = await self.get(obj["kind"], meta["namespace"], meta["name"])
        if current is None:
            await self.create(obj)
            return "created"
        if is_subset(obj, current):
            return "unchanged"
        await self.patch(obj["kind"], meta["namespace"], meta["name"], obj)
        return "updated"

    async def has_kind(self, kind: str) -> bool:
        """Whether the API server serves ``kind`` (a CRD such as KEDA's is installed)."""
        api_version, plural = KINDS[kind]
        if api_version not in self._discovered:
            path = f"/apis/{api_version}" if "/" in api_version else f"/api/{api_version}"
            try:
                answer = await self._request("GET", path)
            except KubeError as exc:
                if exc.status != 404:
                    raise
                answer = {}
            names = {r.get("name") for r in (answer or {}).get("resources", [])}
            self._discovered[api_version] = plural in names
        return self._discovered[api_version]

    def forget_discovery(self) -> None:
        """Look the APIs up again next time (KEDA or cert-manager may arrive later)."""
        self._discovered.clear()

    async def event(
        self,
        involved: Mapping[str, Any],
        reason: str,
        message: str,
        *,
        warning: bool = False,
        now: dt.datetime | None = None,
    ) -> None:
        """Post a Kubernetes Event about ``involved`` (``kubectl describe`` shows it)."""
        now = now or dt.datetime.now(dt.UTC)
        stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
        meta = involved["metadata"]
        digest = hashlib.sha256(f"{reason}{message}{stamp}".encode()).hexdigest()[:10]
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{meta['name']}.{digest}", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": involved["apiVersion"],
                "kind": involved["kind"],
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta.get("uid", ""),
            },
            "reason": reason,
            "message": message[:1024],
            "type": "Warning" if warning else "Normal",
            "source": {"component": FIELD_MANAGER},
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
            "reportingComponent": FIELD_MANAGER,
        }
        try:
            await self.create(event)
        except KubeError as exc:
            if exc.status != 409:  # the same event this second: already told
                raise
