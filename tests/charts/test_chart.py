"""The Helm chart, rendered and linted by the real helm v4; its alerts run by promtool."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY

from support.k8s_schemas import problems

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts/elemta"
BIN = Path(sys.prefix) / "bin"
VALUES = sorted((CHART / "ci").glob("*-values.yaml"))


def tool(name: str) -> str:
    found = BIN / name
    if not found.exists():
        pytest.fail(f"{name} is missing: `make chart` installs it into .venv/bin")
    return str(found)


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([tool("helm"), *args], capture_output=True, text=True, timeout=120)


def rendered(values: Path) -> list[dict[str, Any]]:
    out = helm("template", "demo", str(CHART), "-n", "mail", "-f", str(values))
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


@pytest.mark.parametrize("values", VALUES, ids=lambda p: p.stem)
def test_helm_lint_passes(values: Path) -> None:
    out = helm("lint", "--strict", str(CHART), "-f", str(values))
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("values", VALUES, ids=lambda p: p.stem)
def test_every_rendered_manifest_validates_against_kubernetes_schemas(values: Path) -> None:
    docs = rendered(values)
    assert any(d["kind"] == "Deployment" for d in docs)
    assert [p for d in docs for p in problems(d)] == []


def test_unknown_values_are_refused(tmp_path: Path) -> None:
    bad = tmp_path / "typo.yaml"
    bad.write_text("operator:\n  replica: 2\n")
    out = helm("template", "demo", str(CHART), "-f", str(bad))
    assert out.returncode != 0
    assert "replica" in out.stderr


def test_cluster_from_values_uses_the_charts_nats_and_jaeger() -> None:
    docs = rendered(CHART / "ci/cluster-values.yaml")
    (cluster,) = [d for d in docs if d["kind"] == "ElemtaCluster"]
    assert cluster["spec"]["nats"]["url"] == "nats://demo-elemta-nats.mail.svc:4222"
    assert (
        cluster["spec"]["observability"]["otlpEndpoint"]
        == "http://demo-elemta-jaeger.mail.svc:4317"
    )
    nats = [d for d in docs if d["kind"] == "StatefulSet"][0]
    conf = [d for d in docs if d["kind"] == "ConfigMap" and "nats.conf" in d.get("data", {})][0]
    assert "sync_interval: always" in conf["data"]["nats.conf"]
    assert nats["spec"]["replicas"] == 3
    container = nats["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["memory"]
    (limit,) = [e for e in container["env"] if e["name"] == "GOMEMLIMIT"]
    assert limit["valueFrom"]["resourceFieldRef"]["resource"] == "limits.memory"


def test_namespaced_rbac_is_least_privilege() -> None:
    docs = rendered(CHART / "ci/production-values.yaml")
    roles = [d for d in docs if d["kind"] == "Role"]
    assert {r["metadata"]["namespace"] for r in roles} == {"mail", "mail-staging"}
    assert not [d for d in docs if d["kind"] == "ClusterRole"]
    for rule in roles[0]["rules"]:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"]
        if "secrets" in rule["resources"]:
            assert sorted(rule["verbs"]) == ["create", "get", "patch"]


def test_notes_print_the_smtp_address_and_the_dns_checklist() -> None:
    out = helm(
        "install",
        "demo",
        str(CHART),
        "-n",
        "mail",
        "--dry-run=client",
        "-f",
        str(CHART / "ci/cluster-values.yaml"),
    )
    assert out.returncode == 0, out.stderr
    notes = out.stdout.split("NOTES:", 1)[1]
    assert "kubectl get svc mail-smtp -n mail" in notes
    assert "MX      example.org.               10 mx.example.org." in notes
    assert "_dmarc.example.org." in notes


def test_dashboards_query_only_metrics_the_services_export() -> None:
    import elemta.api.app  # noqa: F401  (registers the metrics)
    import elemta.delivery.metrics  # noqa: F401
    import elemta.ingress.metrics  # noqa: F401
    import elemta.policy.grpc_api  # noqa: F401
    import elemta.queue.metrics  # noqa: F401

    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"], "gauge": [""]}
    exported = {
        metric.name + suffix
        for metric in REGISTRY.collect()
        for suffix in suffixes.get(metric.type, [""])
    }
    dashboards = sorted((CHART / "dashboards").glob("*.json"))
    assert dashboards
    for path in dashboards:
        board = json.loads(path.read_text())
        exprs = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
        assert exprs, path.name
        for name in {n for e in exprs for n in re.findall(r"\belemta_[a-z_]+", e)}:
            assert name in exported, f"{path.name}: {name} is not exported"
    rules = (CHART / "alerts/elemta.rules.yaml").read_text()
    for name in set(re.findall(r"\belemta_[a-z_]+", rules)):
        assert name in exported, f"alerts: {name} is not exported"


def test_alerts_fire_when_they_should(tmp_path: Path) -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())["monitoring"]["prometheusRule"]
    rules = (CHART / "alerts/elemta.rules.yaml").read_text()
    for placeholder, key in [
        ("QUEUE_GROWING_MINUTES", "queueGrowingMinutes"),
        ("DEFERRED_WARNING", "deferredWarning"),
        ("OLDEST_HOURS", "oldestDeferredHours"),
        ("BOUNCE_RATIO", "bounceRatio"),
    ]:
        rules = rules.replace(placeholder, str(values[key]))
    (tmp_path / "elemta.rules.yaml").write_text(yaml.safe_dump({"groups": yaml.safe_load(rules)}))
    shutil.copy(Path(__file__).parent / "alerts_test.yaml", tmp_path)
    promtool = tool("promtool")
    check = subprocess.run(
        [promtool, "check", "rules", "elemta.rules.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    test = subprocess.run(
        [promtool, "test", "rules", "alerts_test.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert test.returncode == 0, test.stdout + test.stderr
