"""``elemta serve <service>``: one service in the foreground.

This is what a container, a systemd unit or ``elemta run`` starts. Each service is
an entry point of the group ``elemta.services``, so a package can add its own.
"""

from __future__ import annotations

import click

from .entrypoints import EntryPointGroup

__all__ = ["SERVICES_GROUP", "serve"]

SERVICES_GROUP = "elemta.services"


@click.group(cls=EntryPointGroup, group=SERVICES_GROUP)
def serve() -> None:
    """Run one service in the foreground until SIGTERM or Ctrl-C, then drain.

    Each service logs JSON lines on stderr and serves /healthz, /readyz and
    /metrics. A bad configuration stops it at once with exit status 78 and a
    message naming the key. `elemta serve SERVICE --help` describes a service.
    """
