"""A fuzzing campaign against the whole system: generated dialogues, then the checks.

Brings up a real nats-server, a DNS server, an aiosmtpd sink and Elemta's
services (policy, queue, delivery, ingress) as processes, then plays generated
dialogues (:mod:`fuzz_dialogues`) against ingress from several threads, from an
untrusted (127.0.0.1) and a trusted (127.0.0.2) address. Besides the checks on
every reply (:mod:`fuzz_session`), a campaign checks:

* a clean message is still delivered, every ``probe_every`` sessions and at the end;
* every message ingress accepted reaches the sink or a mailbox, or is bounced (or,
  from the null sender and undeliverable, is dropped with a log line);
* no message from the untrusted address reached the sink for a foreign recipient;
* no service logged a traceback or an error, and every log line is one JSON event;
* ingress is still running and, once the clients are gone, holds no session;
  its memory after warm-up and at the end is reported.

Run ``make fuzz`` (``SESSIONS=10000``, ``DURATION=600``, ``SEED=n``) or
``python tests/fuzz/fuzz_campaign.py --help``. A finding names the seed of its session;
``make fuzz SEED=<seed> SESSIONS=1`` plays that session again.
"""

from __future__ import annotations

import argparse
import json
import re
import smtplib
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
for path in (HERE, HERE.parent):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from fuzz_dialogues import FOREIGN, OURS, dialogue  # noqa: E402
from fuzz_session import Finding, run_session  # noqa: E402

from support.dnsserver import DnsServer  # noqa: E402
from support.natsserver import NatsServer  # noqa: E402
from support.smtpsink import SmtpSink  # noqa: E402
from support.stack import Stack  # noqa: E402

__all__ = ["Campaign", "Report"]

UNTRUSTED, TRUSTED = "127.0.0.1", "127.0.0.2"


@dataclass
class Report:
    sessions: int = 0
    mutated: int = 0
    replies: int = 0
    accepted: int = 0
    dropped: int = 0  # undeliverable, from the null sender: nobody to bounce to
    probes: int = 0
    seconds: float = 0.0
    rss_start_kib: int = 0
    rss_end_kib: int = 0
    findings: list[Finding] = field(default_factory=list)

    def summary(self) -> str:
        kinds = Counter(f.kind for f in self.findings)
        rate = self.sessions / self.seconds if self.seconds else 0.0
        lines = [
            f"sessions: {self.sessions} ({self.mutated} mutated), replies checked: {self.replies}, "
            f"messages accepted: {self.accepted} (delivered or bounced; {self.dropped} "
            "undeliverable from <> dropped as logged), "
            f"clean probes delivered: {self.probes}",
            f"time: {self.seconds:.1f} s ({rate:.1f} sessions/s)",
            f"ingress RSS: {self.rss_start_kib / 1024:.1f} MiB after warm-up, "
            f"{self.rss_end_kib / 1024:.1f} MiB at the end",
            f"findings: {len(self.findings)}"
            + (
                " (" + ", ".join(f"{k}: {n}" for k, n in kinds.most_common()) + ")" if kinds else ""
            ),
        ]
        for f in self.findings[:25]:
            lines.append(f"  seed {f.seed}: {f.kind}: {f.detail[:300]}")
        return "\n".join(lines)


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class Campaign:
    def __init__(self, workdir: Path, command_timeout: float = 8.0) -> None:
        self.workdir = workdir
        self.nats = NatsServer(workdir / "nats")
        self.dns = DnsServer()
        self.sink = SmtpSink()
        self.command_timeout = command_timeout
        self.stack: Stack | None = None
        self.dropped = 0

    def start(self) -> Campaign:
        self.nats.start()
        self.dns.start()
        self.sink.start()
        route = f"smtp:[127.0.0.1]:{self.sink.port}"
        domains = ["sink.test", *FOREIGN, "client.test", "sender.test", "evil.test"]
        self.stack = Stack(
            self.workdir / "stack",
            self.nats.url,
            self.dns.port,
            {
                "server": {"trusted_networks": [f"{TRUSTED}/32"], "relay_domains": ["sink.test"]},
                "ingress": {
                    "max_message_size": 96 * 1024,
                    "max_recipients": 10,
                    "command_timeout": self.command_timeout,
                    "data_timeout": self.command_timeout,
                },
                "transport": {"routes": {d: route for d in domains}},
            },
        ).start()
        return self

    def stop(self) -> None:
        if self.stack is not None:
            self.stack.stop()
        self.sink.stop()
        self.dns.stop()
        self.nats.stop()

    @property
    def ingress_pid(self) -> int:
        assert self.stack is not None
        proc = self.stack.processes["ingress"].proc
        assert proc is not None
        return proc.pid

    def ingress_alive(self) -> bool:
        assert self.stack is not None
        proc = self.stack.processes["ingress"].proc
        return proc is not None and proc.poll() is None

    # -- the checks around the sessions --------------------------------------------

    def probe(self, n: int) -> Finding | None:
        """A clean dialogue from an untrusted client; None when it was delivered."""
        assert self.stack is not None
        rcpt = f"probe-{n}@sink.test"
        try:
            with smtplib.SMTP(
                "127.0.0.1", self.stack.smtp_port, timeout=30, source_address=(UNTRUSTED, 0)
            ) as s:
                s.ehlo("probe.test")
                s.sendmail("alice@client.test", [rcpt], f"Subject: probe {n}\r\n\r\nclean\r\n")
        except (smtplib.SMTPException, OSError) as exc:
            return Finding(-1, "clean dialogue refused", f"probe {n}: {exc!r}")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if rcpt in self.sink.recipients():
                return None
            time.sleep(0.1)
        return Finding(-1, "clean dialogue not delivered", f"probe {n} to {rcpt}")

    def check_sessions_end(self) -> list[Finding]:
        """Once every client is gone, ingress holds no session (none leaked)."""
        assert self.stack is not None
        ingress = self.stack.processes["ingress"]
        deadline = time.monotonic() + self.command_timeout * 2 + 10
        left = ""
        while time.monotonic() < deadline:
            gauge = re.search(r"^elemta_ingress_sessions (\S+)$", ingress.metrics(), re.M)
            left = gauge.group(1) if gauge else "?"
            if left == "0.0":
                return []
            time.sleep(0.2)
        return [Finding(-1, "sessions left open", f"{left} sessions after every client left")]

    def _delivered_ids(self) -> str:
        with self.sink._lock:
            texts = [m.content.decode("utf-8", "replace") for m in self.sink.messages]
        assert self.stack is not None
        mail = Path(self.stack.config["server"]["state_dir"]) / "mail"
        if mail.exists():
            texts += [p.read_text(errors="replace") for p in mail.rglob("*") if p.is_file()]
        return "\n".join(texts)

    def check_deliveries(self, queued: dict[str, int], wait: float) -> list[Finding]:
        """Every accepted queue id (to the seed of its session) reached the sink or a
        mailbox, or came back in a bounce."""
        seeds = queued
        deadline = time.monotonic() + wait
        missing = list(queued)
        while missing and time.monotonic() < deadline:
            seen = self._delivered_ids()
            missing = [q for q in missing if f" id {q}" not in seen]
            if missing:
                time.sleep(1.0)
        # A message from the null sender that cannot be delivered has nobody to
        # bounce to: the queue drops it and says so (RFC 5321 section 4.5.5).
        dropped = [q for q in missing if "undeliverable bounce dropped" in self._fate(q)]
        self.dropped = len(dropped)
        return [
            Finding(seeds.get(q, -1), "accepted message not delivered", f"{q}: {self._fate(q)}")
            for q in missing
            if q not in dropped
        ]

    def _fate(self, queue_id: str) -> str:
        """What the services logged about ``queue_id``, in order."""
        assert self.stack is not None
        said = []
        for proc in self.stack.processes.values():
            for line in proc.log_path.read_text(errors="replace").splitlines():
                if queue_id in line:
                    try:
                        said.append(f"{proc.name}: {json.loads(line).get('msg', '')[:120]}")
                    except ValueError:
                        said.append(f"{proc.name}: {line[:120]}")
        return " | ".join(said) or "nothing logged"

    def check_relaying(self) -> list[Finding]:
        """Nothing an untrusted client sent reached the sink for a foreign recipient."""
        found = []
        with self.sink._lock:
            messages = list(self.sink.messages)
        for m in messages:
            first = m.content.split(b"\r\n", 2)[:2]
            if not first or not first[0].startswith(b"Received: from "):
                continue  # a bounce or other report the queue made itself
            if f"[{UNTRUSTED}])".encode() not in first[0]:
                continue
            for rcpt in m.rcpt_tos:
                domain = rcpt.rsplit("@", 1)[-1].lower().rstrip(".")
                if domain not in OURS:
                    found.append(Finding(-1, "relayed for an untrusted client", rcpt))
        return found

    def check_logs(self) -> list[Finding]:
        """No traceback, no error, and one JSON object per line in every service's log."""
        assert self.stack is not None
        found = []
        for proc in self.stack.processes.values():
            for n, line in enumerate(proc.log_path.read_text(errors="replace").splitlines()):
                try:
                    event = json.loads(line)
                except ValueError:
                    found.append(
                        Finding(-1, "log line split", f"{proc.name}:{n + 1}: {line[:200]}")
                    )
                    continue
                if event.get("exc") or event.get("level") in ("error", "critical"):
                    detail = f"{proc.name}: {event.get('msg')} {str(event.get('exc'))[-600:]}"
                    found.append(Finding(-1, "error in log", detail))
        return found

    # -- the run ---------------------------------------------------------------------

    def run(
        self,
        sessions: int = 0,
        duration: float = 0.0,
        seed: int = 1,
        concurrency: int = 12,
        probe_every: int = 1000,
        progress: bool = False,
    ) -> Report:
        """Play sessions until ``sessions`` were played or ``duration`` seconds passed."""
        assert self.stack is not None
        report = Report()
        queued: dict[str, int] = {}
        started = time.monotonic()
        next_seed = seed
        pending: set[Future] = set()

        def more() -> bool:
            if sessions and next_seed - seed >= sessions:
                return False
            if duration and time.monotonic() - started >= duration:
                return False
            return bool(sessions or duration)

        with ThreadPoolExecutor(concurrency) as pool:
            while more() or pending:
                while more() and len(pending) < concurrency * 2:
                    d = dialogue(next_seed)
                    source = TRUSTED if d.trusted else UNTRUSTED
                    pending.add(pool.submit(run_session, d, self.stack.smtp_port, source))
                    report.mutated += bool(d.mutations)
                    next_seed += 1
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    out = future.result()
                    report.sessions += 1
                    report.replies += out.replies
                    report.findings += out.findings
                    queued.update(dict.fromkeys(out.queued, out.seed))
                    if report.sessions == min(200, max(1, sessions // 20 or 200)):
                        report.rss_start_kib = _rss_kib(self.ingress_pid)
                    if report.sessions % probe_every == 0:
                        report.probes += 1
                        finding = self.probe(report.sessions)
                        report.findings += [finding] if finding else []
                    if progress and report.sessions % 500 == 0:
                        print(
                            f"{report.sessions} sessions, {len(report.findings)} findings",
                            flush=True,
                        )
        report.seconds = time.monotonic() - started
        report.accepted = len(queued)
        if not self.ingress_alive():
            report.findings.append(Finding(-1, "ingress died", self.stack.logs()[-2000:]))
            return report
        report.rss_end_kib = _rss_kib(self.ingress_pid)
        report.rss_start_kib = report.rss_start_kib or report.rss_end_kib
        finding = self.probe(report.sessions + 1)
        report.probes += finding is None
        report.findings += [finding] if finding else []
        report.findings += self.check_sessions_end()
        report.findings += self.check_deliveries(queued, wait=120 + len(queued) / 20)
        report.dropped = self.dropped
        report.findings += self.check_relaying()
        report.findings += self.check_logs()
        return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--sessions", type=int, default=0, help="sessions to play (0: by duration)")
    parser.add_argument("--duration", type=float, default=0.0, help="seconds to play (0: by count)")
    parser.add_argument(
        "--seed", type=int, default=None, help="seed of the first session (default: from the clock)"
    )
    parser.add_argument("--concurrency", type=int, default=12, help="sessions at once")
    parser.add_argument("--workdir", type=Path, default=None, help="where servers keep state")
    args = parser.parse_args(argv)
    if not args.sessions and not args.duration:
        args.duration = 60.0
    if args.seed is None:
        args.seed = int(time.time()) % 1_000_000 * 1000
    print(f"first seed: {args.seed}", flush=True)
    with tempfile.TemporaryDirectory(prefix="elemta-fuzz-") as tmp:
        workdir = args.workdir or Path(tmp)
        campaign = Campaign(workdir).start()
        try:
            report = campaign.run(
                args.sessions, args.duration, args.seed, args.concurrency, progress=True
            )
        finally:
            campaign.stop()
    print(report.summary())
    return 1 if report.findings else 0


if __name__ == "__main__":
    sys.exit(main())
