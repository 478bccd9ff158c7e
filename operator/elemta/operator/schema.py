"""The ``ElemtaCluster`` schema: the CRD file and the defaults it declares.

The CRD (``crd.yaml`` beside this module) is the one description of the spec.
The API server fills in its ``default:`` values when an object is stored; the
operator applies the same defaults itself before rendering, so an object that
reached it some other way (an older CRD, a test) renders exactly as the API
server would have stored it.
"""

from __future__ import annotations

import copy
from functools import cache
from importlib import resources
from typing import Any

import yaml

__all__ = ["GROUP", "KIND", "PLURAL", "VERSION", "apply_defaults", "crd", "spec_schema"]

GROUP = "elemta.io"
VERSION = "v1alpha1"
KIND = "ElemtaCluster"
PLURAL = "elemtaclusters"


@cache
def _crd() -> dict[str, Any]:
    text = resources.files(__package__).joinpath("crd.yaml").read_text(encoding="utf-8")
    loaded: dict[str, Any] = yaml.safe_load(text)
    return loaded


def crd() -> dict[str, Any]:
    """The CustomResourceDefinition as a manifest (a fresh copy)."""
    return copy.deepcopy(_crd())


def spec_schema() -> dict[str, Any]:
    """The ``openAPIV3Schema`` of the served version."""
    (version,) = (v for v in _crd()["spec"]["versions"] if v["name"] == VERSION)
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


def apply_defaults(schema: dict[str, Any], value: Any) -> Any:
    """Return ``value`` with the schema's defaults filled in, as the API server does.

    A missing property with a ``default`` gets a copy of it, and defaulting then
    continues inside it (so ``default: {}`` on an object brings its members'
    defaults too); arrays are defaulted item by item.
    """
    if isinstance(value, dict) and "properties" in schema:
        out = dict(value)
        for name, sub in schema["properties"].items():
            if name not in out and "default" in sub:
                out[name] = copy.deepcopy(sub["default"])
            if name in out:
                out[name] = apply_defaults(sub, out[name])
        return out
    if isinstance(value, list) and "items" in schema:
        return [apply_defaults(schema["items"], item) for item in value]
    return value
