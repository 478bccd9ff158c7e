"""What every ``elemta serve <service>`` command shares: ``--config``, the exit
status 78 for a bad configuration, and help text taken from the service's own
man-page style docstring."""

from __future__ import annotations

import functools
import importlib
import inspect
from collections.abc import Callable
from typing import Any, TypeVar, cast

import click

from elemta.common.config import Config, ConfigError, load_config
from elemta.common.runtime import EX_CONFIG, Factory, run_service

from .entrypoints import VerbatimCommand

__all__ = ["EX_CONFIG", "argv_command", "config_option", "load_or_exit", "service_command"]

F = TypeVar("F", bound=Callable[..., Any])


def config_option(f: F) -> F:
    """``--config FILE`` (default ``$ELEMTA_CONFIG``; neither: the embedded defaults)."""
    return click.option(
        "--config",
        "config_path",
        metavar="FILE",
        envvar="ELEMTA_CONFIG",
        show_envvar=True,
        help="TOML configuration file; ELEMTA_<SECTION>_<KEY> variables override it.",
    )(f)


def load_or_exit(prog: str, path: str | None) -> Config:
    """The configuration, or exit 78 (EX_CONFIG) with a line naming the bad key."""
    try:
        return load_config(path)
    except ConfigError as exc:
        click.echo(f"{prog}: fatal: {exc}", err=True)
        raise SystemExit(EX_CONFIG) from None


def summary(doc: str | None) -> str:
    """The first line of a service docstring, without its ``elemta-<name>:`` label."""
    first = (doc or "").strip().splitlines()[0] if (doc or "").strip() else ""
    for sep in (": ", " - "):
        label, found, rest = first.partition(sep)
        if found and label.startswith(("elemta-", "elemta.")):
            return rest.strip()
    return first


def service_command(
    name: str,
    factory: str,
    http_listen: Callable[[Config], str] | None = None,
    doc: str | None = None,
) -> click.Command:
    """The ``elemta serve <name>`` command of a service run by
    :func:`elemta.common.runtime.run_service`.

    ``factory`` is ``"module:attribute"``, imported only when the service starts,
    so that listing the services stays quick. ``http_listen`` defaults to the
    ``http_listen`` key of the service's own section, ``doc`` to the docstring of
    the package ``elemta.<name>``.
    """
    if http_listen is None:
        http_listen = lambda cfg: getattr(cfg, name).http_listen  # noqa: E731
    if doc is None:
        doc = importlib.import_module(f"elemta.{name}").__doc__

    def start(config_path: str | None) -> None:
        module, _, attr = factory.partition(":")
        made: Factory = getattr(importlib.import_module(module), attr)
        if "config_path" in inspect.signature(made).parameters:
            # a service that re-reads its file (on SIGHUP) is told which one
            made = functools.partial(cast(Any, made), config_path=config_path)
        raise SystemExit(run_service(name, made, http_listen, config_path))

    return config_option(VerbatimCommand(name, callback=start, help=doc, short_help=summary(doc)))


def argv_command(name: str, main: Callable[[list[str]], int], doc: str | None) -> click.Command:
    """An ``elemta serve <name>`` command for a program with its own argument parser:
    every argument, ``--help`` included, goes to ``main(argv)``."""

    def start(args: tuple[str, ...]) -> None:
        raise SystemExit(main(list(args)))

    return click.Command(
        name,
        callback=start,
        params=[click.Argument(["args"], nargs=-1, type=click.UNPROCESSED)],
        help=doc,
        short_help=summary(doc),
        add_help_option=False,
        context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False},
    )
