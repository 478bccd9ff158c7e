"""Crash-consistency figures: messages with unique tokens through the whole system
while every kind of process is killed with SIGKILL, again and again.

    make chaos                                  # 10,000 messages, one node, then a 3-node cluster
    make chaos ARGS="--nodes 3 --messages 2000 --rounds 5"

Each kind (ingress, policy, the active queue, the standby queue, a delivery
process, a nats-server node, everything at once) is killed ``--rounds`` times,
spread over the load; ``elemta run`` starts what was killed again at once. It
prints accepted, lost (accepted, never delivered), duplicates and the kills per
kind, and exits 1 when an accepted message was lost. See ``tests/support/chaos.py``
and ``bench/README.md``. Not part of ``make test`` (a small run is:
``tests/launcher/test_launcher_chaos.py``).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

_HERE = Path(__file__).resolve().parent
for _path in (str(_HERE.parent / "tests"), str(_HERE)):
    if _path in sys.path:
        sys.path.remove(_path)
    sys.path.insert(0, _path)

from support.chaos import Chaos  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=20, help="kills of each kind")
    parser.add_argument(
        "--nodes", default="1,3", help="nats-server nodes, one run per entry (1, 3 or 5)"
    )
    parser.add_argument("--sessions", type=int, default=8, help="SMTP client sessions")
    parser.add_argument("--lease-time", type=float, default=5.0, help="queue.lease_time")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the directory with all logs")
    parser.add_argument(
        "--log-level", default="WARNING", help="the services' log level (INFO shows each lookup)"
    )
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else int(time.time())
    failed = False
    for nodes in (int(n) for n in args.nodes.split(",")):
        workdir = Path(tempfile.mkdtemp(prefix=f"elemta-chaos-{nodes}-"))
        print(f"chaos: {args.messages} messages, {nodes} node(s), seed {seed}, in {workdir}")
        result = Chaos(
            workdir,
            messages=args.messages,
            rounds=args.rounds,
            nodes=nodes,
            sessions=args.sessions,
            lease_time=args.lease_time,
            seed=seed,
            log_level=args.log_level,
            say=lambda text: print(text, flush=True),
        ).run()
        print(result.report(), flush=True)
        failed = failed or bool(result.lost)
        if not args.keep:
            import shutil

            shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
