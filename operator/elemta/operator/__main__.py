"""``python -m elemta.operator`` (and ``elemta serve operator``): run the operator.

Watches ``ElemtaCluster`` objects in ``ELEMTA_OPERATOR_NAMESPACES``
(comma-separated; empty: every namespace) and serves liveness on
``ELEMTA_OPERATOR_HEALTH`` (default ``http://0.0.0.0:8080/healthz``).
"""

from __future__ import annotations

import argparse
import asyncio
import os

import kopf

import elemta.operator
from elemta.cli.service import argv_command

from . import handlers


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="elemta serve operator", description=__doc__)
    parser.add_argument(
        "--namespace",
        action="append",
        default=[n for n in os.environ.get("ELEMTA_OPERATOR_NAMESPACES", "").split(",") if n],
        help="watch this namespace (repeatable); default: all namespaces",
    )
    parser.add_argument(
        "--liveness",
        default=os.environ.get("ELEMTA_OPERATOR_HEALTH", "http://0.0.0.0:8080/healthz"),
        help="liveness endpoint URL",
    )
    args = parser.parse_args(argv)
    assert handlers.reconcile_cluster  # registers the handlers with kopf
    kopf.configure(verbose=False)
    asyncio.run(
        kopf.operator(
            standalone=True,
            clusterwide=not args.namespace,
            namespaces=args.namespace,
            liveness_endpoint=args.liveness,
        )
    )
    return 0


command = argv_command("operator", main, elemta.operator.__doc__)

if __name__ == "__main__":
    raise SystemExit(main())
