"""compose.yaml: valid by the Compose Specification's schema, consistent with Elemta."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from elemta.common.config import load_config

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = ROOT / "tests/data/compose-spec/compose-spec.json"


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
    return loaded


def test_compose_file_follows_the_compose_specification() -> None:
    schema = json.loads(SCHEMA.read_text())
    validator = jsonschema.Draft7Validator(schema)
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(compose())]
    assert errors == []


def test_a_misspelt_key_is_caught_by_the_schema() -> None:
    schema = json.loads(SCHEMA.read_text())
    broken = compose()
    broken["services"]["ingress"]["helthcheck"] = broken["services"]["ingress"].pop("healthcheck")
    assert list(jsonschema.Draft7Validator(schema).iter_errors(broken))


def test_every_service_runs_from_the_image_with_a_health_check() -> None:
    services = compose()["services"]
    assert set(services) == {"nats", "ingress", "policy", "queue", "delivery", "api"}
    for name in ("ingress", "policy", "queue", "delivery", "api"):
        svc = services[name]
        assert svc["command"] == ["serve", name]
        assert svc["read_only"] is True and svc["cap_drop"] == ["ALL"]
        assert "healthcheck" in svc
        assert svc["depends_on"]["nats"]["condition"] == "service_healthy"


def test_health_checks_ask_the_port_each_service_listens_on() -> None:
    config = load_config(ROOT / "compose/elemta.toml", env={})
    services = compose()["services"]
    for name in ("ingress", "policy", "queue", "delivery"):
        port = getattr(config, name).http_listen.rsplit(":", 1)[1]
        assert f"127.0.0.1:{port}/readyz" in services[name]["healthcheck"]["test"][-1]
    assert config.api.listen.endswith(":8025")
    assert "127.0.0.1:8025:8025" in services["api"]["ports"]


def test_smtp_ports_are_published_and_nats_syncs_every_write() -> None:
    ports = compose()["services"]["ingress"]["ports"]
    assert {"25:2525", "587:2587", "465:2465"} <= set(ports)
    conf = (ROOT / "compose/nats.conf").read_text()
    assert re.search(r"sync_interval:\s*always", conf)


def test_two_queue_containers_run_one_active_and_one_standing_by() -> None:
    assert compose()["services"]["queue"]["deploy"]["replicas"] == 2
