"""The ElemtaCluster CRD: sample objects accepted or refused by its schema and CEL rules."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from elemta.operator.schema import crd, spec_schema

from support.crd_validation import validate

ROOT = Path(__file__).resolve().parents[2]
MINIMAL = {
    "apiVersion": "elemta.io/v1alpha1",
    "kind": "ElemtaCluster",
    "metadata": {"name": "mail", "namespace": "mail"},
    "spec": {"hostname": "mx.example.org", "localDomains": ["example.org"]},
}


def with_spec(**changes: Any) -> dict[str, Any]:
    obj = copy.deepcopy(MINIMAL)
    obj["spec"].update(changes)
    return obj


def test_minimal_cluster_is_accepted() -> None:
    assert validate(MINIMAL) == []


def test_example_clusters_are_accepted() -> None:
    examples = sorted((ROOT / "charts/elemta/examples").glob("*.yaml"))
    assert len(examples) >= 2
    for path in examples:
        assert validate(yaml.safe_load(path.read_text())) == [], path.name


def test_chart_ships_the_same_crd_as_the_operator() -> None:
    shipped = yaml.safe_load(
        (ROOT / "charts/elemta/crds/elemtaclusters.elemta.io.yaml").read_text()
    )
    assert shipped == crd()


def test_crd_is_structural_with_subresources_and_short_name() -> None:
    definition = crd()
    assert definition["spec"]["names"]["shortNames"] == ["ec"]
    version = definition["spec"]["versions"][0]
    assert version["subresources"]["status"] == {}
    assert version["subresources"]["scale"]["specReplicasPath"] == ".spec.delivery.replicas"
    columns = {c["name"] for c in version["additionalPrinterColumns"]}
    assert {"Ready", "Ingress", "Delivery", "Queue", "Age"} <= columns

    def walk(schema: dict[str, Any], path: str) -> None:
        # Structural: every node has a type, unless it preserves unknown fields.
        assert "type" in schema or schema.get("x-kubernetes-preserve-unknown-fields"), path
        for name, sub in schema.get("properties", {}).items():
            walk(sub, f"{path}.{name}")
        if "items" in schema:
            walk(schema["items"], f"{path}[]")

    walk(spec_schema(), "")


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        ({"hostname": "not a host"}, "hostname"),
        ({"localDomains": []}, "localDomains"),
        ({"relayDomains": ["example.org"]}, "both local and relayed"),
        ({"trustedNetworks": ["10.0.0.0/8", "everyone"]}, "must be a CIDR"),
        ({"colour": "blue"}, "colour"),
        (
            {"ingress": {"listeners": [{"name": "a", "port": 25}, {"name": "b", "port": 25}]}},
            "ports must be unique",
        ),
        (
            {
                "ingress": {
                    "listeners": [{"name": "sub", "port": 587, "tls": "none", "auth": "required"}]
                }
            },
            "AUTH needs TLS",
        ),
        (
            {"ingress": {"listeners": [{"name": "smtp", "port": 25, "containerPort": 25}]}},
            "unprivileged",
        ),
        ({"ingress": {"service": {"type": "ClusterIP"}}}, "externalTrafficPolicy Local"),
        ({"delivery": {"autoscaling": {"minReplicas": 5, "maxReplicas": 2}}}, "minReplicas"),
        ({"tls": {"mode": "certManager"}}, "needs tls.issuerRef"),
        ({"tls": {"mode": "secret"}}, "needs tls.secretName"),
        ({"tls": {"validityDays": 30, "renewBeforeDays": 30}}, "renewBeforeDays"),
        ({"nats": {"mode": "external"}}, "needs nats.url"),
        ({"nats": {"mode": "external", "url": "http://nats:4222"}}, "nats:// or tls://"),
        ({"nats": {"replicas": 2}}, "replicas"),
        (
            {"dkim": {"keys": [{"domain": "example.org", "selector": "a"}] * 2}},
            "appears once",
        ),
        ({"dkim": {"keys": [{"domain": "example.org", "selector": "a", "bits": 1024}]}}, "bits"),
    ],
)
def test_invalid_spec_is_refused(change: dict[str, Any], complaint: str) -> None:
    errors = validate(with_spec(**change))
    assert any(complaint in e for e in errors), errors


def test_external_nats_with_several_urls_is_accepted() -> None:
    spec = {"mode": "external", "url": "tls://a.nats:4222, tls://b.nats:4222"}
    assert validate(with_spec(nats=spec)) == []


def test_submission_listeners_with_auth_over_tls_are_accepted() -> None:
    listeners = [
        {"name": "smtp", "port": 25},
        {"name": "submission", "port": 587, "tls": "starttls", "auth": "required"},
        {"name": "submissions", "port": 465, "tls": "implicit", "auth": "required"},
    ]
    assert validate(with_spec(ingress={"listeners": listeners})) == []
