"""``elemta audit``: the audit log, newest first."""

from __future__ import annotations

import json
import time

import click

from .apiclient import ApiClient, api_options

__all__ = ["audit"]


@click.command()
@click.option("--limit", "-n", type=click.IntRange(1, 1000), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="JSON lines instead of a table.")
@api_options
def audit(limit: int, as_json: bool, client: ApiClient) -> None:
    """Every change made through the API: when, who, from where, what."""
    page = client.get("/api/v1/audit", limit=limit)
    for e in page["entries"]:
        if as_json:
            click.echo(json.dumps(e))
            continue
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(e.get("at", 0)))
        actor = e.get("actor") or {}
        who = f"{actor.get('label', '?')} ({actor.get('role', '?')})"
        extra = {
            k: v
            for k, v in e.items()
            if k not in ("seq", "at", "actor", "action", "target", "remote")
        }
        detail = " ".join(f"{k}={v}" for k, v in extra.items())
        click.echo(
            f"{when}  {who:<24}  {e.get('remote') or '-':<15}  {e.get('action')} {e.get('target')} {detail}".rstrip()
        )
