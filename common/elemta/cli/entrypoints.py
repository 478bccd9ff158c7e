"""A click group whose subcommands are the entry points of one group, loaded on use.

Loading on use keeps ``elemta --help`` fast and lets a broken third-party entry
point break only itself: it is listed as unavailable, with the reason, and
running it says why and exits 1.
"""

from __future__ import annotations

import inspect
from importlib.metadata import EntryPoint, entry_points
from typing import Any

import click

__all__ = ["EntryPointGroup", "VerbatimCommand"]


class EntryPointGroup(click.Group):
    """Subcommands from the entry-point group ``group`` (besides any added in code)."""

    def __init__(self, *args: Any, group: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.entry_point_group = group
        self._loaded: dict[tuple[str, str], click.Command] = {}

    def entry_points(self) -> dict[str, EntryPoint]:
        found: dict[str, EntryPoint] = {}
        for ep in entry_points(group=self.entry_point_group):
            found.setdefault(ep.name, ep)  # the first distribution to claim a name keeps it
        return found

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self.entry_points()))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            return command
        ep = self.entry_points().get(cmd_name)
        if ep is None:
            return None
        if (cmd_name, ep.value) in self._loaded:
            return self._loaded[cmd_name, ep.value]
        try:
            loaded = ep.load()
        except Exception as exc:  # noqa: BLE001 - a broken plugin must not break the rest
            loaded = _unavailable(cmd_name, f"cannot load {ep.value}: {exc!r}")
        if not isinstance(loaded, click.Command):
            loaded = _unavailable(cmd_name, f"{ep.value} is not a click command")
        self._loaded[cmd_name, ep.value] = loaded
        return loaded


def _unavailable(name: str, reason: str) -> click.Command:
    def fail() -> None:
        raise click.ClickException(reason)

    return click.Command(
        name,
        callback=fail,
        help=f"(unavailable: {reason})",
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    )


class VerbatimCommand(click.Command):
    """A command whose help text is printed as written (a man-page style docstring),
    not re-wrapped by click."""

    def format_help_text(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        text = inspect.cleandoc(self.help or "")
        if text:
            formatter.write_paragraph()
            for line in text.splitlines():
                formatter.write(f"  {line}\n" if line else "\n")
