"""Shared by the DKIM and ARC tests: test data paths and TXT records in zone syntax."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from elemta.common.config import DnsSettings

from support.dnsserver import DnsServer

DATA = Path(__file__).resolve().parent.parent / "data"
DKIM_DATA = DATA / "dkim"
ARC_DATA = DATA / "arc"


def txt_value(text: str) -> str:
    """A TXT value in zone syntax: quoted strings of at most 255 bytes each."""
    raw = "".join(text.split("\n")).strip().encode("utf-8")
    chunks = [raw[i : i + 255] for i in range(0, len(raw), 255)] or [b""]
    quoted = []
    for chunk in chunks:
        s = chunk.decode("utf-8").replace("\\", "\\\\").replace('"', '\\"')
        quoted.append(f'"{s}"')
    return " ".join(quoted)


def serve_txt(server: DnsServer, records: dict[str, str]) -> None:
    for name, value in records.items():
        server.add(name, "TXT", txt_value(value))


def dns_settings(server: DnsServer, timeout: float = 2.0) -> DnsSettings:
    return DnsSettings(nameservers=["127.0.0.1"], port=server.port, timeout=timeout)


def load_suite(name: str) -> list[dict[str, Any]]:
    """An ARC suite, converted once from the upstream YAML to JSON (same folder)."""
    docs: list[dict[str, Any]] = json.loads((ARC_DATA / f"{name}.json").read_text())
    return docs


def txt_records(scenario: dict[str, Any]) -> dict[str, str]:
    return dict(scenario.get("txt-records") or scenario.get("txt_records") or {})
