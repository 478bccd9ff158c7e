"""``elemta key create|list|revoke``: API keys, through the API (or, for the very
first key, straight into NATS with ``--bootstrap``)."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import time
from typing import Any

import click

from elemta.common.apikeys import ROLES, KeyStore
from elemta.common.audit import AuditLog
from elemta.common.jetstream import connect, disconnect

from .apiclient import ApiClient, api_options
from .service import config_option, load_or_exit

__all__ = ["key", "parse_duration"]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> float:
    """``90``, ``30m``, ``12h``, ``30d``, ``2w`` -> seconds."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text)
    if not m:
        raise click.BadParameter(f"{text!r} is not a duration (e.g. 90, 30m, 12h, 30d, 2w)")
    return float(m.group(1)) * _UNITS[m.group(2) or "s"]


def _expiry(expires: str | None) -> float:
    return time.time() + parse_duration(expires) if expires else 0.0


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(ts)) if ts else "never"


@click.group()
def key() -> None:
    """API keys: each has a role (admin, operator, readonly, user), a label and an
    optional expiry. The key is printed once, at creation; only its hash is kept."""


@key.command()
@click.option(
    "--label", required=True, help="What the key is for (shown in lists and the audit log)."
)
@click.option("--role", type=click.Choice(ROLES), required=True)
@click.option("--expires", metavar="DURATION", help="Lifetime: 30d, 12h, 2w ... (default: never).")
@click.option(
    "--address",
    "addresses",
    multiple=True,
    metavar="ADDR",
    help="For role user: an address whose mail it sees (repeatable).",
)
@click.option(
    "--bootstrap",
    is_flag=True,
    help="Write the key straight into NATS (for the first admin key; needs the NATS settings of --config).",
)
@config_option
@click.option("--api-url", metavar="URL")
@click.option("--api-key", metavar="KEY")
def create(
    label: str,
    role: str,
    expires: str | None,
    addresses: tuple[str, ...],
    bootstrap: bool,
    config_path: str | None,
    api_url: str | None,
    api_key: str | None,
) -> None:
    """Create a key and print it (once)."""
    if role == "user" and not addresses:
        raise click.UsageError("a key with role user needs --address")
    if bootstrap:
        cfg = load_or_exit("elemta key", config_path)
        token = asyncio.run(_bootstrap(cfg, label, role, _expiry(expires), list(addresses)))
    else:
        client = ApiClient.resolve(api_url, api_key)
        body = {
            "label": label,
            "role": role,
            "expires_at": _expiry(expires),
            "addresses": list(addresses),
        }
        token = client.post("/api/v1/keys", json=body)["token"]
    click.echo(token)


async def _bootstrap(
    cfg: Any, label: str, role: str, expires_at: float, addresses: list[str]
) -> str:
    nc = await connect(cfg, "elemta-key")
    try:
        js = nc.jetstream(timeout=cfg.nats.publish_timeout)
        store = await KeyStore.open(js)
        actor = f"local:{socket.gethostname()}"
        k, token = await store.create(label, role, actor, expires_at, addresses)
        audit = await AuditLog.open(js, cfg.api.audit_retention, cfg.nats.publish_timeout)
        await audit.record(
            {
                "kind": "local",
                "id": actor,
                "label": "elemta key create --bootstrap",
                "role": "admin",
            },
            "key.create",
            k.id,
            label=label,
            role=role,
            expires_at=expires_at,
        )
        return token
    finally:
        await disconnect(nc)


@key.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="JSON lines instead of a table.")
@api_options
def list_(as_json: bool, client: ApiClient) -> None:
    """The keys: id, role, label, expiry (never the keys themselves)."""
    keys = client.get("/api/v1/keys")
    if as_json:
        for k in keys:
            click.echo(json.dumps(k))
        return
    click.echo(f"{'ID':<12}  {'ROLE':<8}  {'EXPIRES':<16}  LABEL")
    for k in keys:
        click.echo(f"{k['id']:<12}  {k['role']:<8}  {_when(k['expires_at']):<16}  {k['label']}")


@key.command()
@click.argument("key_id")
@api_options
def revoke(key_id: str, client: ApiClient) -> None:
    """Revoke a key: the next request with it is refused."""
    client.delete(f"/api/v1/keys/{key_id}")
    click.echo(f"revoked {key_id}")
