"""Rendering: spec to manifests, pure functions, no API server."""

from __future__ import annotations

from typing import Any

import pytest

from elemta.common.config import load_config
from elemta.operator.configfile import render_config_text
from elemta.operator.model import Capabilities, Cluster
from elemta.operator.render import render

from support.k8s_schemas import problems

BASE: dict[str, Any] = {"hostname": "mx.example.org", "localDomains": ["example.org"]}
FULL: dict[str, Any] = {
    **BASE,
    "relayDomains": ["partner.example"],
    "trustedNetworks": ["10.0.0.0/8"],
    "imagePullSecrets": ["regcred"],
    "ingress": {
        "replicas": 3,
        "listeners": [
            {"name": "smtp", "port": 25},
            {"name": "submission", "port": 587, "auth": "required"},
            {
                "name": "submissions",
                "port": 465,
                "tls": "implicit",
                "auth": "required",
                "tlsLevel": "maximum",
                "proxyProtocol": True,
            },
        ],
        "proxyNetworks": ["10.0.0.0/8"],
        "service": {"annotations": {"lb.example/type": "nlb"}},
        "podTemplate": {"spec": {"nodeSelector": {"pool": "edge"}}},
    },
    "tls": {"mode": "certManager", "issuerRef": {"name": "letsencrypt"}},
    "dkim": {
        "keys": [
            {"domain": "example.org", "selector": "a", "algorithm": "ed25519-sha256"},
            {"domain": "example.org", "selector": "old", "sign": False},
        ]
    },
    "observability": {"serviceMonitor": True, "otlpEndpoint": "http://jaeger:4317"},
    "config": {"delivery": {"concurrency": 32}, "transport": {"routes": {"*": "mx"}}},
}
EVERYTHING = Capabilities(keda=True, cert_manager=True, service_monitor=True)


def cluster(spec: dict[str, Any], name: str = "mail") -> Cluster:
    body = {"metadata": {"name": name, "namespace": "mail", "uid": "u", "generation": 3}}
    return Cluster.from_body({**body, "spec": spec}, "registry.example/elemta:1.0")


def by_name(manifests: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {f"{m['kind']}/{m['metadata']['name']}": m for m in manifests}


@pytest.mark.parametrize("spec", [BASE, FULL], ids=["minimal", "full"])
@pytest.mark.parametrize("caps", [Capabilities(), EVERYTHING], ids=["core", "with-crds"])
def test_every_rendered_manifest_validates_against_kubernetes_schemas(
    spec: dict[str, Any], caps: Capabilities
) -> None:
    manifests = render(cluster(spec), caps)
    assert [p for m in manifests for p in problems(m)] == []


@pytest.mark.parametrize("spec", [BASE, FULL], ids=["minimal", "full"])
def test_rendered_configuration_is_accepted_by_the_services(spec: dict[str, Any], tmp_path) -> None:
    path = tmp_path / "elemta.toml"
    path.write_text(render_config_text(cluster(spec)))
    config = load_config(path, env={})
    assert config.server.hostname == "mx.example.org"
    assert config.policy.address == "mail-policy.mail.svc:7071"
    assert config.ingress.listen == "0.0.0.0:2525"


def test_every_listener_is_rendered_with_its_role_tls_level_and_proxy_protocol(tmp_path) -> None:
    path = tmp_path / "elemta.toml"
    path.write_text(render_config_text(cluster(FULL)))
    ingress = load_config(path, env={}).ingress
    assert (ingress.listen, ingress.tls_level, ingress.auth_on_mta) == (
        "0.0.0.0:2525",
        "recommended",
        False,
    )
    assert [(li.address, li.role, li.auth, li.tls_level, li.proxy_protocol) for li in
            ingress.listeners] == [
        ("0.0.0.0:2587", "submission", True, "recommended", False),
        ("0.0.0.0:2465", "submissions", True, "maximum", True),
    ]  # fmt: skip
    assert ingress.proxy_networks == ["10.0.0.0/8"]
    minimal = tmp_path / "minimal.toml"
    minimal.write_text(render_config_text(cluster(BASE)))
    assert load_config(minimal, env={}).ingress.listeners == []  # only what the spec lists


def test_spec_config_is_merged_under_the_operators_keys() -> None:
    text = render_config_text(
        cluster({**FULL, "config": {"delivery": {"concurrency": 32}, "api": {"listen": "x:1"}}})
    )
    assert "concurrency = 32" in text
    assert 'listen = "0.0.0.0:8025"' in text  # the pod's address is the operator's to decide


def test_only_signing_dkim_keys_are_configured_and_mounted() -> None:
    manifests = by_name(render(cluster(FULL), EVERYTHING))
    config = manifests["ConfigMap/mail-config"]["data"]["elemta.toml"]
    assert 'selector = "a"' in config and 'selector = "old"' not in config
    policy = manifests["Deployment/mail-policy"]["spec"]["template"]["spec"]
    (dkim,) = [v for v in policy["volumes"] if v["name"] == "dkim"]
    assert [s["secret"]["name"] for s in dkim["projected"]["sources"]] == [
        "mail-dkim-a-example-org"
    ]


def test_every_listener_gets_a_service_port_and_an_unprivileged_container_port() -> None:
    manifests = by_name(render(cluster(FULL), EVERYTHING))
    ports = manifests["Service/mail-smtp"]["spec"]["ports"]
    assert [(p["port"], p["targetPort"]) for p in ports] == [(25, 2525), (587, 2587), (465, 2465)]
    container = manifests["Deployment/mail-ingress"]["spec"]["template"]["spec"]["containers"][0]
    assert {p["containerPort"] for p in container["ports"]} >= {2525, 2587, 2465}
    assert manifests["Service/mail-smtp"]["metadata"]["annotations"] == {"lb.example/type": "nlb"}


def test_pods_run_unprivileged_on_a_read_only_root() -> None:
    for m in render(cluster(FULL), EVERYTHING):
        if m["kind"] not in ("Deployment", "StatefulSet"):
            continue
        pod = m["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        for c in pod["containers"]:
            assert c["securityContext"]["readOnlyRootFilesystem"] is True
            assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
            assert c["securityContext"]["allowPrivilegeEscalation"] is False
            assert {"livenessProbe", "readinessProbe"} <= set(c)


def test_pod_template_overrides_are_merged() -> None:
    manifests = by_name(render(cluster(FULL), EVERYTHING))
    pod = manifests["Deployment/mail-ingress"]["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"pool": "edge"}
    assert pod["containers"][0]["name"] == "ingress"


def test_without_autoscaling_delivery_keeps_its_replicas_and_no_autoscaler() -> None:
    spec = {**BASE, "delivery": {"replicas": 4, "autoscaling": {"enabled": False}}}
    manifests = by_name(render(cluster(spec), EVERYTHING))
    assert manifests["Deployment/mail-delivery"]["spec"]["replicas"] == 4
    assert not [k for k in manifests if k.startswith(("ScaledObject/", "HorizontalPod"))]


def test_external_nats_without_monitoring_endpoint_falls_back_to_an_hpa() -> None:
    spec = {**BASE, "nats": {"mode": "external", "url": "nats://nats.infra:4222"}}
    manifests = by_name(render(cluster(spec), EVERYTHING))
    assert "HorizontalPodAutoscaler/mail-delivery" in manifests
    assert not [k for k in manifests if k.startswith("StatefulSet/")]


def test_the_managed_nats_server_collects_garbage_before_its_memory_limit() -> None:
    (nats,) = [m for m in render(cluster(BASE), EVERYTHING) if m["kind"] == "StatefulSet"]
    container = nats["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["memory"] == "1Gi"
    (limit,) = [e for e in container["env"] if e["name"] == "GOMEMLIMIT"]
    assert limit["valueFrom"]["resourceFieldRef"]["resource"] == "limits.memory"
    # without a memory limit there is nothing to collect ahead of
    spec = {**BASE, "nats": {"resources": {"requests": {"memory": "256Mi"}}}}
    (nats,) = [m for m in render(cluster(spec), EVERYTHING) if m["kind"] == "StatefulSet"]
    env = nats["spec"]["template"]["spec"]["containers"][0]["env"]
    assert "GOMEMLIMIT" not in [e["name"] for e in env]


def test_long_cluster_names_give_valid_child_names() -> None:
    c = cluster(BASE, name="a" * 60)
    manifests = render(c, EVERYTHING)
    assert all(len(m["metadata"]["name"]) <= 63 for m in manifests)
    assert len({(m["kind"], m["metadata"]["name"]) for m in manifests}) == len(manifests)
