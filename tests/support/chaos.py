"""Crash consistency: mail with unique tokens through the whole system while
processes are killed with SIGKILL, counting what was accepted, lost and doubled.

The system is ``elemta run`` as on one production machine: nats-server (one node,
or a cluster of three with every stream replicated three times), policy, two
queue processes (one active through its lease), two delivery processes and
ingress, restarted by the launcher at once (``--restart-delay 0``) when they die.
The final destination is a :class:`~support.countingsink.CountingSink`; clients
(:class:`~support.tokenload.TokenLoad`) send every token until it gets a ``250``,
as a sending MTA retries.

The run is cut into rounds: each round lets the next ``messages / (rounds + 1)``
tokens go and kills one process of every kind, in random order with random
pauses, while they are sent (the next round waits until the tokens of the one
before are accepted, so the kills stay spread over the load): ingress, policy,
the active queue, the standby queue, a delivery process, a nats-server node, and
everything at once. So every kind is killed ``rounds`` times. At the end it
waits until every stored message is finished (``ELEMTA_MESSAGES`` empty), so
that a late copy is counted too.

**Lost** is a token that got its ``250`` and never reached the sink: the promise
Elemta makes. **Duplicates** are copies beyond the first; they come from a
``250`` that the client never read (ingress killed in between; the client sends
again, as every MTA does), from a ``451`` after a store that did happen (NATS
killed during the publish), and from deliveries done but not yet acknowledged
when delivery died.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import signal
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import nats

from elemta.common.names import MESSAGES_STREAM

from .countingsink import Arrival, CountingSink
from .dnsserver import DnsServer, free_port
from .elemta_run import Run, write_config
from .tokenload import TokenLoad

__all__ = ["KINDS", "Chaos", "ChaosResult"]

AT_ONCE = 2.0  # seconds: copies of one queue id this close came from two attempts at once
SOON = 2.0  # seconds after a first copy in which a delivery kill may explain a second
KINDS = ("ingress", "policy", "queue-active", "queue-standby", "delivery", "nats", "all")


@dataclass
class ChaosResult:
    messages: int
    nodes: int
    accepted: int = 0
    lost: list[str] = field(default_factory=list)
    duplicates: int = 0
    doubled: int = 0  # tokens that arrived more than once
    # duplicates whose client sent the message again after an attempt that ended
    # without a 250 once the message was out, per how it ended (ingress side);
    # the others were delivered twice by delivery (a job redone after a kill)
    resent: Counter[str] = field(default_factory=Counter)
    # duplicates by delivery whose token was the last message of a sink connection
    # that ended without QUIT: its delivery process was killed between the sink's
    # 250 and the stored report (the copy every MTA makes); the rest came back
    # for another reason
    cut: int = 0
    # duplicates by delivery that arrived within AT_ONCE seconds of an earlier copy
    # of the same queue id: two attempts running at the same time, not one redone
    at_once: int = 0
    # other duplicates by delivery whose first copy came at most SOON seconds before
    # a delivery process was killed (alone or with everything): the process that
    # sent it may have died with its end unrecorded, most often while NATS was
    # away too (the record waiting for the reconnection)
    killed_soon: int = 0
    delivered: int = 0  # copies the sink received, duplicates included
    unaccepted_delivered: int = 0  # arrived though never answered 250
    rejected: dict[str, str] = field(default_factory=dict)  # token -> 5xx reply
    kills: Counter[str] = field(default_factory=Counter)
    replies: Counter[str] = field(default_factory=Counter)
    strays: int = 0  # stored messages no consumer offered again, handed to the queue
    seconds: float = 0.0
    drained: bool = False  # every stored message finished before counting

    @property
    def duplicate_ratio(self) -> float:
        return self.duplicates / self.accepted if self.accepted else 0.0

    @property
    def by_delivery(self) -> int:
        return self.duplicates - sum(self.resent.values())

    def report(self) -> str:
        where = "one nats-server" if self.nodes == 1 else f"a {self.nodes}-node cluster"
        lines = [
            f"chaos on {where}: {self.messages} messages in {self.seconds:.0f} s",
            f"  accepted    {self.accepted}",
            f"  lost        {len(self.lost)}"
            + (f"  e.g. {sorted(self.lost)[:5]}" if self.lost else ""),
            f"  duplicates  {self.duplicates} ({100 * self.duplicate_ratio:.2f} %, "
            f"{self.doubled} tokens)",
            "    after a resend  "
            + (", ".join(f"{k} {n}" for k, n in sorted(self.resent.items())) or "0"),
            f"    by delivery     {self.by_delivery} (killed after the 250: {self.cut}, "
            f"other: {self.by_delivery - self.cut}, of which a delivery process killed "
            f"within {SOON:.0f} s after the first copy: {self.killed_soon}, at once: "
            f"{self.at_once})",
            f"  delivered   {self.delivered} copies"
            + (
                f", {self.unaccepted_delivered} never answered 250"
                if self.unaccepted_delivered
                else ""
            ),
            f"  strays      {self.strays} (acked by a consumer with no report; handed to the "
            "queue by its sweep)",
            "  kills       " + ", ".join(f"{k} {self.kills[k]}" for k in KINDS),
            "  replies     " + ", ".join(f"{k} {n}" for k, n in sorted(self.replies.items())),
        ]
        if self.rejected:
            first = sorted(self.rejected.items())[:3]
            lines.append(f"  rejected    {len(self.rejected)} (5xx), e.g. {first}")
        if not self.drained:
            lines.append("  (the queue was not empty at the end: copies may still come)")
        return "\n".join(lines)


class Chaos:
    """One run; :meth:`run` returns the :class:`ChaosResult`."""

    def __init__(
        self,
        workdir: Path,
        messages: int = 10_000,
        rounds: int = 20,
        nodes: int = 1,
        sessions: int = 8,
        lease_time: float = 5.0,
        pause: tuple[float, float] = (0.3, 2.0),
        seed: int | None = None,
        say: Callable[[str], None] = print,
        drain_timeout: float = 300.0,
        log_level: str = "WARNING",
    ) -> None:
        self.workdir = workdir
        self.messages = messages
        self.rounds = rounds
        self.nodes = nodes
        self.sessions = sessions
        self.lease_time = lease_time
        self.pause = pause
        self.random = random.Random(seed)
        self.say = say
        self.drain_timeout = drain_timeout
        self.log_level = log_level
        self.killed: list[tuple[float, str, list[str]]] = []  # (epoch, kind, names)
        self.run_dir = workdir / "var" / "run"
        self.health: dict[str, str] = {}
        self.launcher: Run | None = None
        self.nats_url = ""

    # -- the system ---------------------------------------------------------------

    def _start(self, dns_port: int, sink_port: int) -> tuple[Run, int]:
        """``elemta run``; again on fresh ports when one picked free was taken by
        another suite on the machine before a service bound it."""
        for attempt in range(3):
            try:
                return self._start_once(dns_port, sink_port)
            except AssertionError as exc:
                if attempt == 2 or "already in use" not in str(exc).lower():
                    raise
                self.say("chaos: a port was taken meanwhile; starting again on others")
                if self.launcher is not None:
                    self.launcher.kill()
                    self.launcher = None
        raise AssertionError("not reached")

    def _start_once(self, dns_port: int, sink_port: int) -> tuple[Run, int]:
        config, cfg = write_config(
            self.workdir,
            dns_port,
            {
                "server": {"trusted_networks": ["127.0.0.0/8"]},
                "transport": {"routes": {"relay.test": f"smtp:[127.0.0.1]:{sink_port}"}},
                "queue": {"lease_time": self.lease_time},
                "telemetry": {"log_level": self.log_level, "log_format": "text"},
            },
        )
        run = Run(
            self.workdir,
            "--config",
            str(config),
            "--nats-port",
            str(free_port()),
            "--nats-cluster",
            str(self.nodes),
            "--only",
            "policy,queue,delivery,ingress",
            "--queue",
            "2",
            "--delivery",
            "2",
            "--restart-delay",
            "0",
            "--ready-timeout",
            "180",
        )
        self.launcher = run
        out = run.wait_for("Press Ctrl-C to stop.", timeout=240)
        found = re.search(r"Health\s+(.*)", out)
        assert found, out
        for part in found.group(1).split(", "):
            name, address = part.split(" ", 1)
            self.health[name] = address
        nats_url = re.search(r"NATS\s+(\S+)", out)
        assert nats_url, out
        self.nats_url = nats_url.group(1)
        return run, int(cfg["ingress"]["listen"].rsplit(":", 1)[1])

    def _pid(self, name: str) -> int | None:
        try:
            return int((self.run_dir / f"{name}.pid").read_text())
        except (FileNotFoundError, ValueError):
            return None

    def _names(self) -> list[str]:
        return sorted(p.stem for p in self.run_dir.glob("*.pid") if p.stem != "elemta")

    def _queue_active(self, name: str) -> bool | None:
        try:
            with urllib.request.urlopen(f"http://{self.health[name]}/metrics", timeout=2) as r:
                text = r.read().decode()
        except OSError:
            return None
        found = re.search(r"^elemta_queue_active (\S+)$", text, re.M)
        return None if found is None else float(found.group(1)) == 1.0

    def _pick(self, kind: str) -> list[str]:
        """The process names to kill for ``kind``; empty when none is up to kill."""
        names = self._names()
        if kind == "all":
            return names
        if kind in ("queue-active", "queue-standby"):
            want = kind == "queue-active"
            deadline = time.monotonic() + self.lease_time + 30
            while time.monotonic() < deadline:
                for name in (n for n in names if n.startswith("queue-")):
                    if self._queue_active(name) is want and self._pid(name):
                        return [name]
                time.sleep(0.2)
                names = self._names()
            return []
        prefix = {"nats": "nats"}.get(kind, kind)
        candidates = [n for n in names if n == prefix or n.startswith(prefix + "-")]
        return [self.random.choice(candidates)] if candidates else []

    def _kill(self, kind: str) -> int:
        """Kill ``kind`` and wait until the launcher started it again."""
        run = self.launcher
        assert run is not None
        names = self._pick(kind)
        mark = len(run.lines)
        killed = []
        for name in names:
            pid = self._pid(name)
            if pid is None:
                continue
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue
            killed.append((name, pid))
        if killed:
            self.killed.append((time.time(), kind, [name for name, _pid in killed]))
        for name, _pid in killed:
            self._wait_line(mark, f"{name} restarted (pid", 60)
        return len(killed)

    def _wait_line(self, mark: int, text: str, timeout: float) -> None:
        run = self.launcher
        assert run is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(text in line for line in run.lines[mark:]):
                return
            if run.proc.poll() is not None:
                raise AssertionError(f"elemta run exited:\n{run.output[-4000:]}")
            time.sleep(0.05)
        raise AssertionError(f"no {text!r} within {timeout} s:\n{run.output[-4000:]}")

    async def _stored(self) -> int:
        nc = await nats.connect(self.nats_url.split(","), connect_timeout=5)
        try:
            info = await nc.jetstream(timeout=10).stream_info(MESSAGES_STREAM)
            return int(info.state.messages)
        finally:
            await nc.close()

    def _strays(self) -> int:
        """Strays the queue's sweep handed over, from the queue processes' logs."""
        logs = self.workdir / "var" / "log"
        return sum(
            path.read_text(errors="replace").count("handed to the queue")
            for path in logs.glob("queue-*.log")
        )

    def _drain(self, sink: CountingSink, accepted: set[str]) -> bool:
        """Until every accepted token arrived and every stored message is finished."""
        deadline = time.monotonic() + self.drain_timeout
        sink.wait_for(accepted, self.drain_timeout)
        while time.monotonic() < deadline:
            try:
                if asyncio.run(self._stored()) == 0:
                    return True
            except Exception as exc:  # a node still electing: ask again
                self.say(f"chaos: queue not read ({exc})")
            time.sleep(1.0)
        return False

    def _explain(self, token: str, arrivals: list[Arrival], cut: bool, hows: list[str]) -> str:
        """A doubled token for ``duplicates.txt``: each copy with its queue id, time
        and sink connection, and the kills from 30 s before to 5 s after it (the
        offset: negative before the copy)."""
        out = [f"{token}: {len(arrivals)} copies{' (cut)' if cut else ''}"]
        if hows:
            out.append(f" client unsure: {', '.join(hows)}")
        out.append("\n")
        for a in arrivals:
            before = [
                f"{kind}@{at - a.at:+.3f}s:{'+'.join(names)}"
                for at, kind, names in self.killed
                if -30 <= at - a.at <= 5
            ]
            out.append(
                f"  {a.queue_id or '?'} at {a.at:.3f} conn {a.connection}"
                f"  kills: {' '.join(before) or '-'}\n"
            )
        return "".join(out)

    # -- the run ------------------------------------------------------------------

    def run(self) -> ChaosResult:
        result = ChaosResult(self.messages, self.nodes)
        dns = DnsServer()
        dns.start()
        sink = CountingSink().start()
        load: TokenLoad | None = None
        started = time.monotonic()
        try:
            run, smtp = self._start(dns.port, sink.port)
            load = TokenLoad(smtp, self.messages, prefix="chaos", sessions=self.sessions)
            per_round = max(1, self.messages // (self.rounds + 1))
            load.allow(per_round)
            load.start()
            for n in range(self.rounds):
                load.allow(per_round * (n + 2))
                kinds = list(KINDS)
                self.random.shuffle(kinds)
                for kind in kinds:
                    time.sleep(self.random.uniform(*self.pause))
                    if self._kill(kind):
                        result.kills[kind] += 1
                # keep the kills spread over the load: the next round starts once
                # the tokens let go before this one are accepted
                load.wait_accepted(per_round * (n + 1), 600)
                self.say(
                    f"chaos: round {n + 1}/{self.rounds}: {load.accepted_count} accepted, "
                    f"{sink.deliveries} delivered"
                )
            load.allow(self.messages)
            if not load.wait(max(600.0, self.messages / 5)):
                self.say(f"chaos: the load did not finish: {load.accepted_count} accepted")
            accepted = load.accepted
            result.drained = self._drain(sink, accepted)
            counts = sink.snapshot()
            result.accepted = len(accepted)
            result.lost = sorted(t for t in accepted if not counts.get(t))
            result.duplicates = sum(n - 1 for n in counts.values() if n > 1)
            result.doubled = sum(1 for n in counts.values() if n > 1)
            unsure = dict(load.stats.unsure)
            cut = sink.cut_tokens()
            lines = []
            for token, n in sorted(counts.items()):
                if n < 2:
                    continue
                arrivals = sink.arrivals(token)
                # a copy under a queue id seen before was delivered again by Elemta;
                # a new queue id is a client's resend that was stored after all
                ids = list(dict.fromkeys(a.queue_id for a in arrivals))
                hows = unsure.get(token, [])
                for i in range(len(ids) - 1):
                    result.resent[hows[i] if i < len(hows) else "unexplained"] += 1
                again = n - len(ids)
                if again and token in cut:
                    result.cut += again
                elif again:
                    first = arrivals[0].at
                    if any(
                        0 <= at - first <= SOON and any(n.startswith("delivery") for n in names)
                        for at, _kind, names in self.killed
                    ):
                        result.killed_soon += again
                    seen: dict[str, float] = {}
                    for a in arrivals:
                        if a.queue_id in seen and a.at - seen[a.queue_id] <= AT_ONCE:
                            result.at_once += 1
                        seen[a.queue_id] = a.at
                lines.append(self._explain(token, arrivals, token in cut, hows))
            (self.workdir / "duplicates.txt").write_text("".join(lines))
            result.delivered = sum(counts.values())
            result.unaccepted_delivered = sum(1 for t in counts if t not in accepted)
            result.replies = load.replies()
            result.rejected = dict(load.stats.rejected)
            result.seconds = time.monotonic() - started
            result.strays = self._strays()
            assert run.ctrl_c(timeout=180) == 0, run.output[-4000:]
            return result
        finally:
            if self.launcher is not None:  # what it said: exits, restarts, takeovers
                (self.workdir / "elemta-run.out").write_text(self.launcher.output + "\n")
            if load is not None:
                load.stop()
            if self.launcher is not None:
                self.launcher.kill()
            sink.stop()
            dns.stop()
