"""``elemta run`` (what ``make run`` calls): the whole Elemta system on this machine.

The work is done by :mod:`elemta.launcher`; this module is its command line.
"""

from __future__ import annotations

import re

import click

from elemta.launcher.supervisor import SERVICES, Launcher, Options

from .entrypoints import VerbatimCommand
from .service import EX_CONFIG, config_option, load_or_exit

__all__ = ["run"]

HELP = """Run the whole Elemta system on this machine, one process per service:
for trying it out (make run) and for production on one host (under systemd,
see docs/running.md).

It reads the configuration as the services do (--config or $ELEMTA_CONFIG,
ELEMTA_<SECTION>_<KEY> overrides; with neither, the embedded defaults: SMTP on
127.0.0.1:2525, API and web UI on 127.0.0.1:8025, local domain `localhost`,
state under ./var), then:

1. starts its own nats-server with JetStream under <state_dir>/nats on
   127.0.0.1, port 4222 when free and any free port otherwise, writing with
   `sync_interval: always` so that an accepted message survives a machine
   crash (as Postfix's fsync does) -- unless --nats-url or $ELEMTA_NATS_URL
   names a server to use instead. With --nats-cluster 3 it starts a
   JetStream cluster of three nodes instead (stores under
   <state_dir>/nats-cluster/node-<i>, logs nats-<i>.log) and the streams are
   replicated on all three (nats.replicas, unless configured otherwise): a
   250 then means a majority of the nodes stored the message, and the loss
   of any one node loses nothing. --nats-memory-limit gives each node a soft
   memory limit (Go's GOMEMLIMIT): size it to the memory nats-server may use
   on the machine, above what its streams keep live;
2. starts policy, --queue N queue processes (one active through a lease in
   JetStream KV, the others standing by to take over within queue.lease_time),
   --delivery N delivery workers, --ingress N SMTP listeners (sharing the SMTP
   port through SO_REUSEPORT) and the api, each
   as `elemta serve <service>` with ELEMTA_NATS_URL set, logging to
   <state_dir>/log/<service>[-i].log, its pid in <state_dir>/run/<name>.pid;
3. waits until every /readyz answers 200 and prints where everything is.

Extra instances get their own health port: the configured http_listen port
plus i, skipping ports that the configuration uses or that are taken. A port 0
in the configuration is replaced by a free port, so that the address printed
and probed is the real one.

Once everything is ready, a service or nats-server node that exits or is
killed is started again, as Postfix's master(8) restarts its daemons: after
--restart-delay seconds, the pause doubling (up to 60 s) for each further
failure within 30 s of a start. Each exit and restart is logged on
stderr; while a service behind it restarts, ingress answers 451 4.3.0 and
clients retry. Only a signal to this launcher stops the system: Ctrl-C,
SIGTERM or SIGHUP stop the services in order -- ingress (no new mail), api,
delivery, queue, policy -- each with SIGTERM and up to --stop-timeout seconds
before SIGKILL, then nats-server; a second Ctrl-C kills what is left at once.
The services run in their own process groups, so a Ctrl-C reaches only this
launcher, which keeps that order; on Linux they also get SIGTERM should the
launcher itself die. A service that exits while the system is still
starting stops everything with its log tail (a configuration or port
problem is shown, not retried).

--only api,queue starts a subset. Without the queue service, which owns the
streams, the launcher creates them itself on the embedded nats-server so that
the services it started can become ready.

Exit status: 0 after Ctrl-C, 1 when something did not start, 2 for a usage
error, 78 for a bad configuration.
"""


def _only(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> list[str] | None:
    if not value:
        return None
    names = [n.strip() for item in value for n in item.split(",") if n.strip()]
    unknown = sorted(set(names) - set(SERVICES))
    if unknown:
        raise click.BadParameter(f"unknown service {', '.join(unknown)}; use {', '.join(SERVICES)}")
    return [s for s in SERVICES if s in names]


def _at_least_one(ctx: click.Context, param: click.Parameter, value: int) -> int:
    if value < 1:
        raise click.BadParameter("needs at least 1")
    return value


_SIZE = re.compile(r"[0-9]+(B|KiB|MiB|GiB|TiB)?")


def _memory_limit(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """A size as Go's GOMEMLIMIT reads it: bytes, or a number with KiB, MiB, GiB, TiB."""
    if value and not _SIZE.fullmatch(value):
        raise click.BadParameter(f"{value!r} is no size; give e.g. 512MiB or 1GiB")
    return value


@click.command("run", cls=VerbatimCommand, help=HELP, short_help="Run the whole system locally.")
@config_option
@click.option(
    "--nats-url",
    metavar="URL",
    help="Use this NATS server (default: $ELEMTA_NATS_URL; neither: start nats-server).",
)
@click.option(
    "--nats-port",
    type=click.IntRange(1, 65535),
    default=4222,
    show_default=True,
    help="Port for the embedded nats-server when free (else any free port).",
)
@click.option(
    "--nats-cluster",
    type=click.Choice(["1", "3", "5"]),
    default="1",
    show_default=True,
    callback=lambda ctx, param, value: int(value),
    help="Embedded nats-server nodes: 3 or 5 form a JetStream cluster.",
)
@click.option(
    "--nats-memory-limit",
    default="",
    metavar="SIZE",
    callback=_memory_limit,
    help="Soft memory limit of each embedded nats-server (Go's GOMEMLIMIT, e.g. 512MiB): "
    "it collects garbage harder near it. Default: none (the heap may grow to twice "
    "what is live).",
)
@click.option(
    "--delivery",
    type=int,
    default=2,
    show_default=True,
    callback=_at_least_one,
    help="Delivery processes.",
)
@click.option(
    "--ingress",
    type=int,
    default=1,
    show_default=True,
    callback=_at_least_one,
    help="SMTP processes.",
)
@click.option(
    "--queue",
    type=int,
    default=1,
    show_default=True,
    callback=_at_least_one,
    help="Queue processes: one active, the others standing by to take over it.",
)
@click.option(
    "--only",
    multiple=True,
    metavar="SERVICE[,SERVICE]",
    callback=_only,
    help="Start only these services: " + ", ".join(SERVICES) + ".",
)
@click.option("--foreground-logs", is_flag=True, help="Also show every log on the terminal.")
@click.option(
    "--ready-timeout",
    type=float,
    default=60.0,
    show_default=True,
    help="Seconds to wait for every /readyz.",
)
@click.option(
    "--stop-timeout",
    type=float,
    default=30.0,
    show_default=True,
    help="Seconds each service gets to stop before SIGKILL.",
)
@click.option(
    "--restart-delay",
    type=click.FloatRange(0.0, 60.0),
    default=1.0,
    show_default=True,
    help="Seconds before a stopped service is started again (doubles while it keeps failing).",
)
def run(config_path: str | None, **options: object) -> None:
    opts = Options(config=config_path, **options)  # type: ignore[arg-type]
    cfg = load_or_exit("elemta run", config_path)
    if opts.ingress > 1 and not cfg.ingress.reuse_port and "ingress" in (opts.only or SERVICES):
        click.echo("elemta run: fatal: --ingress above 1 needs ingress.reuse_port = true", err=True)
        raise SystemExit(EX_CONFIG)
    raise SystemExit(Launcher(opts, cfg).run())
