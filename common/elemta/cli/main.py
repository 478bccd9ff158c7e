"""The root of the ``elemta`` command (console script ``elemta``)."""

from __future__ import annotations

import click

from .entrypoints import EntryPointGroup

__all__ = ["COMMANDS_GROUP", "cli", "main"]

COMMANDS_GROUP = "elemta.commands"


@click.group(
    cls=EntryPointGroup,
    group=COMMANDS_GROUP,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(package_name="elemta", prog_name="elemta")
def cli() -> None:
    """Elemta, a mail transfer agent: SMTP in, checks, a durable queue in NATS
    JetStream, delivery to MX hosts, relays, LMTP mailboxes and Maildirs.

    Every command reads the same configuration: a TOML file (--config or
    $ELEMTA_CONFIG) and ELEMTA_<SECTION>_<KEY> environment variables.
    `elemta COMMAND --help` tells more.
    """


def main() -> None:
    cli(prog_name="elemta")


if __name__ == "__main__":
    main()
