#!/usr/bin/env python3
"""``make run``: the whole Elemta system on this machine, one process per service.

It reads the configuration as the services do (``--config`` or ``ELEMTA_CONFIG``,
``ELEMTA_<SECTION>_<KEY>`` overrides; with neither, the embedded defaults: SMTP on
127.0.0.1:2525, API and web UI on 127.0.0.1:8025, local domain ``localhost``,
state under ``./var``), then:

1. starts its own nats-server with JetStream under ``<state_dir>/nats`` on
   127.0.0.1, port 4222 when free and any free port otherwise, writing with
   ``sync_interval: always`` so that an accepted message survives a machine
   crash (as Postfix's fsync does) -- unless ``--nats-url`` or
   ``ELEMTA_NATS_URL`` names a server to use instead;
2. starts policy, queue, ``--delivery N`` delivery workers, ``--ingress N``
   SMTP listeners (sharing the SMTP port through SO_REUSEPORT) and the api,
   each as ``python -m elemta.<service>`` with ``ELEMTA_NATS_URL`` set, logging
   to ``<state_dir>/log/<service>[-i].log``;
3. waits until every ``/readyz`` answers 200 and prints where everything is.

Extra instances get their own health port: the configured ``http_listen`` port
plus i, skipping ports that the configuration uses or that are taken. A port 0
in the configuration is replaced by a free port, so that the address printed
and probed is the real one.

If a service exits on its own, its log tail is printed and everything stops
with exit status 1. Ctrl-C, SIGTERM or SIGHUP stop the services in order --
ingress (no new mail), api, delivery, queue, policy -- each with SIGTERM and up
to ``--stop-timeout`` seconds before SIGKILL, then nats-server; a second Ctrl-C
kills what is left at once. The services run in their own process groups, so a
Ctrl-C reaches only this launcher, which keeps that order; on Linux they also
get SIGTERM should the launcher itself die.

``--only api,queue`` starts a subset (for an operator or a developer). Without
the queue service, which owns the streams, the launcher creates them itself on
the embedded nats-server so that the services it started can become ready.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The launcher package next to this file, also when run as a script (make run).
if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from launcher.addresses import (  # noqa: E402
    any_free_port,
    concrete_addresses,
    configured_ports,
    join_hostport,
    next_free_port,
    port_free,
    probe_host,
    split_hostport,
)
from launcher.failure import Failure  # noqa: E402
from launcher.natsserver import nats_answers, nats_config, nats_server_binary  # noqa: E402
from launcher.paths import import_paths, python_path  # noqa: E402
from launcher.processes import Child, spawn, tail  # noqa: E402
from launcher.supervisor import SERVICES, STOP_ORDER, Launcher  # noqa: E402

__all__ = [
    "DEFAULT_NATS_PORT",
    "EX_CONFIG",
    "ROOT",
    "SERVICES",
    "STOP_ORDER",
    "Child",
    "Failure",
    "Launcher",
    "any_free_port",
    "concrete_addresses",
    "configured_ports",
    "join_hostport",
    "main",
    "nats_answers",
    "nats_config",
    "nats_server_binary",
    "next_free_port",
    "parse_args",
    "port_free",
    "probe_host",
    "python_path",
    "spawn",
    "split_hostport",
    "tail",
]

EX_CONFIG = 78
DEFAULT_NATS_PORT = 4222


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="make run ARGS=...",
        description="Run the whole Elemta system locally, one process per service.",
    )
    parser.add_argument("--config", help="TOML configuration file (default: $ELEMTA_CONFIG)")
    parser.add_argument(
        "--nats-url",
        help="use this NATS server (default: $ELEMTA_NATS_URL; neither: start nats-server)",
    )
    parser.add_argument(
        "--nats-port",
        type=int,
        default=DEFAULT_NATS_PORT,
        help="port for the embedded nats-server when free (default 4222; else any free port)",
    )
    parser.add_argument("--delivery", type=int, default=2, help="delivery processes (default 2)")
    parser.add_argument("--ingress", type=int, default=1, help="SMTP processes (default 1)")
    parser.add_argument(
        "--only",
        action="append",
        metavar="SERVICE[,SERVICE]",
        help="start only these services: " + ", ".join(SERVICES),
    )
    parser.add_argument(
        "--foreground-logs", action="store_true", help="also show every log on the terminal"
    )
    parser.add_argument(
        "--ready-timeout",
        type=float,
        default=60.0,
        help="seconds to wait for every /readyz (default 60)",
    )
    parser.add_argument(
        "--stop-timeout",
        type=float,
        default=30.0,
        help="seconds each service gets to stop before SIGKILL (default 30)",
    )
    args = parser.parse_args(argv)
    if args.only:
        names = [n.strip() for item in args.only for n in item.split(",") if n.strip()]
        unknown = sorted(set(names) - set(SERVICES))
        if unknown:
            parser.error(f"--only: unknown service {', '.join(unknown)}; use {', '.join(SERVICES)}")
        args.only = [s for s in SERVICES if s in names]
    if args.delivery < 1 or args.ingress < 1:
        parser.error("--delivery and --ingress need at least 1")
    if not 1 <= args.nats_port <= 65535:
        parser.error("--nats-port must be between 1 and 65535")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import_paths()
    from elemta.common.config import ConfigError, load_config

    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(f"elemta: fatal: {exc}", file=sys.stderr)
        return EX_CONFIG
    if args.ingress > 1 and not cfg.ingress.reuse_port and "ingress" in (args.only or SERVICES):
        print("elemta: fatal: --ingress above 1 needs ingress.reuse_port = true", file=sys.stderr)
        return EX_CONFIG
    return Launcher(args, cfg).run()


if __name__ == "__main__":
    raise SystemExit(main())
