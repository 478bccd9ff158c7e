"""The ``/api/v1`` routes, one module per subject; each route names its permission."""

from __future__ import annotations

from typing import Any

from ..permissions import PERMISSIONS

__all__ = ["SECURITY_SCHEME", "needs"]

SECURITY_SCHEME = "apiKey"


def needs(permission: str) -> dict[str, Any]:
    """``openapi_extra`` of a route: its permission (checked by the auth middleware)
    and the security requirement shown in the OpenAPI document."""
    if permission not in PERMISSIONS:
        raise ValueError(f"unknown permission {permission!r}")
    return {"x-permission": permission, "security": [{SECURITY_SCHEME: []}]}
