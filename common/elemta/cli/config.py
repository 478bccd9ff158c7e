"""``elemta config check`` and ``elemta config show``, in the manner of ``postconf``."""

from __future__ import annotations

import json
from typing import Any

import click
import tomli_w

from elemta.common.config import Config, redacted

from .service import config_option, load_or_exit

__all__ = ["config"]


@click.group()
def config() -> None:
    """Check or print the configuration: the TOML file (--config or $ELEMTA_CONFIG)
    with every ELEMTA_<SECTION>_<KEY> variable applied, as each service sees it."""


@config.command()
@config_option
def check(config_path: str | None) -> None:
    """Exit 0 when the configuration is valid; else print what is wrong, naming
    the key, and exit 78 (EX_CONFIG) -- what a service would do at start."""
    load_or_exit("elemta config", config_path)
    click.echo(f"elemta config: {config_path or 'built-in defaults'}: ok")


@config.command()
@config_option
@click.option(
    "--non-default",
    "-n",
    is_flag=True,
    help="Only the keys whose value differs from the default (postconf -n).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["toml", "json"]),
    default="toml",
    show_default=True,
    help="TOML reads like the configuration file; JSON is for programs.",
)
def show(config_path: str | None, non_default: bool, fmt: str) -> None:
    """Print the effective configuration, secrets redacted (passwords in URLs and
    secret keys print as ***)."""
    cfg = load_or_exit("elemta config", config_path)
    data = redacted(cfg)
    if non_default:
        data = _differences(data, redacted(Config()))
    if fmt == "json":
        click.echo(json.dumps(data, indent=2))
    else:
        click.echo(tomli_w.dumps(data), nl=False)


def _differences(data: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for section, values in data.items():
        changed = {k: v for k, v in values.items() if defaults.get(section, {}).get(k) != v}
        if changed:
            out[section] = changed
    return out
