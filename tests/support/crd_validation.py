"""Validate an object against the CRD's ``openAPIV3Schema`` as the API server does.

Two passes, like the API server: the structural schema (types, enums, patterns,
bounds, required fields; unknown fields refused, as ``kubectl`` does with strict
field validation), then every ``x-kubernetes-validations`` CEL rule with ``self``
bound to the value it sits on (cel-python, plus the Kubernetes ``isCIDR``
extension). Defaults are applied first, as they are before the API server
validates.
"""

from __future__ import annotations

import copy
import ipaddress
from typing import Any

import celpy
import jsonschema
from celpy import celtypes

from elemta.operator.schema import apply_defaults, spec_schema


def _strict(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema as JSON Schema: objects with properties take no other members."""
    out = {k: v for k, v in schema.items() if not k.startswith("x-kubernetes")}
    if "properties" in out:
        out["properties"] = {k: _strict(v) for k, v in out["properties"].items()}
        if not schema.get("x-kubernetes-preserve-unknown-fields"):
            out.setdefault("additionalProperties", False)
    if isinstance(out.get("items"), dict):
        out["items"] = _strict(out["items"])
    if isinstance(out.get("additionalProperties"), dict):
        out["additionalProperties"] = _strict(out["additionalProperties"])
    return out


def _is_cidr(value: celtypes.StringType) -> celtypes.BoolType:
    try:
        ipaddress.ip_network(str(value), strict=False)
    except ValueError:
        return celtypes.BoolType(False)
    return celtypes.BoolType("/" in str(value))


_ENV = celpy.Environment()


def _cel_errors(schema: dict[str, Any], value: Any, path: str) -> list[str]:
    errors: list[str] = []
    for rule in schema.get("x-kubernetes-validations", []):
        program = _ENV.program(_ENV.compile(rule["rule"]), functions={"isCIDR": _is_cidr})
        result = program.evaluate({"self": celpy.json_to_cel(value)})
        if not isinstance(result, celtypes.BoolType):
            raise AssertionError(f"rule {rule['rule']!r} at {path} did not evaluate: {result!r}")
        if not result:
            errors.append(f"{path}: {rule.get('message', rule['rule'])}")
    if isinstance(value, dict):
        for name, sub in schema.get("properties", {}).items():
            if name in value:
                errors += _cel_errors(sub, value[name], f"{path}.{name}")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            errors += _cel_errors(schema["items"], item, f"{path}[{i}]")
    return errors


def validate(obj: dict[str, Any]) -> list[str]:
    """Every reason the API server would refuse ``obj``; empty when it is accepted."""
    schema = spec_schema()
    obj = apply_defaults(schema, copy.deepcopy(obj))
    validator = jsonschema.Draft7Validator(_strict(schema))
    errors = [
        f"{'.'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}"
        for e in validator.iter_errors(obj)
    ]
    if errors:
        return errors
    return _cel_errors(schema, obj, "")
