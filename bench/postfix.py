"""The Postfix side: Debian's tools (installed on demand) and a private Postfix
instance in a temporary directory (own config, queue and log; port 25 untouched)."""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from procs import Procs
from resources import descendants, proc_stat
from util import DOMAIN, BenchError, System, free_port, log, tail, wait_port

SBIN_DIRS = ("/usr/sbin", "/usr/bin", "/sbin", "/bin")


def find_tool(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for d in SBIN_DIRS:
        p = Path(d) / name
        if p.exists() and os.access(p, os.X_OK):
            return str(p)
    return None


def ensure_postfix() -> dict[str, str]:
    """Find smtp-source, smtp-sink, postfix and postconf; apt-get install postfix if missing."""
    names = ("smtp-source", "smtp-sink", "postfix", "postconf")
    tools = {n: find_tool(n) for n in names}
    if all(tools.values()):
        return {k: v for k, v in tools.items() if v}
    if os.geteuid() != 0:
        raise BenchError("postfix tools missing and not root: apt-get install postfix")
    if not shutil.which("apt-get"):
        raise BenchError("postfix tools missing and no apt-get: install Postfix by hand")
    log("installing Debian postfix (smtp-source, smtp-sink, postfix)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if shutil.which("debconf-set-selections"):
        subprocess.run(
            ["debconf-set-selections"],
            input=b"postfix postfix/main_mailer_type select No configuration\n"
            b"postfix postfix/mailname string bench.invalid\n",
            env=env,
            check=False,
            timeout=60,
        )
    cmd = ["apt-get", "install", "-y", "--no-install-recommends", "postfix"]
    if subprocess.run(cmd, env=env, check=False, timeout=900).returncode != 0:
        log("apt-get install failed; running apt-get update and trying again")
        subprocess.run(["apt-get", "update"], env=env, check=False, timeout=900)
        subprocess.run(cmd, env=env, check=True, timeout=900)
    tools = {n: find_tool(n) for n in names}
    missing = [n for n, p in tools.items() if not p]
    if missing:
        raise BenchError(f"still missing after installing postfix: {', '.join(missing)}")
    return {k: v for k, v in tools.items() if v}


MASTER_CF = """\
127.0.0.1:{port} inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""

MAIN_CF = """\
# A private Postfix instance for the relay benchmark: its own config, queue and log.
compatibility_level = 3.6
queue_directory = {spool}
data_directory = {data}
mail_owner = postfix
setgid_group = postdrop
myhostname = postfix.bench.invalid
mydomain = bench.invalid
myorigin = $myhostname
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
smtp_bind_address = 127.0.0.1
mynetworks = 127.0.0.0/8
# No local delivery: everything for bench.test goes to the sink.
mydestination =
relay_domains =
local_recipient_maps =
local_transport = error:local delivery disabled
alias_maps =
alias_database =
biff = no
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
transport_maps = inline:{{{domain}=smtp:[127.0.0.1]:{sink_port}}}
default_destination_concurrency_limit = {concurrency}
smtp_connection_cache_on_demand = yes
# No DNS at all (the client is 127.0.0.1, the next hop [127.0.0.1]).
smtpd_peername_lookup = no
maillog_file = {maillog}
maillog_file_prefixes = {prefix}
"""


class Postfix(System):
    """A private Postfix: ``postfix -c <tmp>/etc start`` with its own queue and log."""

    name = "postfix"
    QUEUES = ("maildrop", "incoming", "active", "deferred", "hold")

    def __init__(
        self,
        procs: Procs,
        tools: dict[str, str],
        workdir: Path,
        sink_port: int,
        args: argparse.Namespace,
    ) -> None:
        self.procs = procs
        self.tools = tools
        self.workdir = workdir
        self.sink_port = sink_port
        self.args = args
        self.smtp_port = free_port()
        self.conf = workdir / "etc"
        self.spool = workdir / "spool"
        self.data = workdir / "data"
        self.maillog = workdir / "maillog"
        self.started = False

    def _postfix(self, *cmd: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.tools["postfix"], "-c", str(self.conf), *cmd],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def start(self) -> None:
        if os.geteuid() != 0:
            raise BenchError("the Postfix half needs root (postfix start, mail_owner=postfix)")
        for d in (self.workdir, self.conf, self.spool, self.data):
            d.mkdir(parents=True, exist_ok=True)
            d.chmod(0o755)
        # The daemons run as postfix and must reach the queue through every parent.
        for parent in self.workdir.parents:
            if parent == Path("/") or parent.stat().st_mode & 0o005 == 0o005:
                break
            parent.chmod(parent.stat().st_mode | 0o005)
        shutil.chown(self.data, "postfix")
        (self.conf / "master.cf").write_text(MASTER_CF.format(port=self.smtp_port))
        (self.conf / "main.cf").write_text(
            MAIN_CF.format(
                spool=self.spool,
                data=self.data,
                domain=DOMAIN,
                sink_port=self.sink_port,
                concurrency=self.args.dest_concurrency,
                maillog=self.maillog,
                prefix=self.workdir,
            )
        )
        check = self._postfix("check")
        if check.returncode != 0:
            raise BenchError(f"postfix check failed:\n{check.stdout}{check.stderr}")
        self.started = True  # from here on, stop() must run even if start is cut short
        started = self._postfix("start")
        if started.returncode != 0:
            raise BenchError(
                f"postfix start failed:\n{started.stdout}{started.stderr}{tail(self.maillog)}"
            )
        wait_port(self.smtp_port, 20)

    def master_pid(self) -> int | None:
        try:
            pid = int((self.spool / "pid" / "master.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        return pid if proc_stat(pid) is not None else None

    def pids(self) -> dict[int, str]:
        master = self.master_pid()
        if master is None:
            return {}
        out = {}
        for pid in descendants(master):
            st = proc_stat(pid)
            if st is not None:
                out[pid] = f"postfix/{st[0]}"
        return out

    def queued(self) -> int:
        n = 0
        for q in self.QUEUES:
            for _, _, files in os.walk(self.spool / q):
                n += len(files)
        return n

    def after(self) -> dict[str, Any]:
        try:
            sent = tail(self.maillog, 1 << 30).count(" status=sent ")
        except OSError:
            sent = 0
        return {"queue_files_left": self.queued(), "maillog_status_sent": sent}

    def stop(self) -> None:
        if not self.started:
            return
        master = self.master_pid()
        try:
            self._postfix("stop", timeout=30)
        except subprocess.TimeoutExpired:
            pass
        deadline = time.monotonic() + 15
        while master is not None and proc_stat(master) is not None:
            if time.monotonic() > deadline:
                log("postfix did not stop; postfix abort, then SIGKILL")
                try:
                    self._postfix("abort", timeout=15)
                except subprocess.TimeoutExpired:
                    pass
                for pid in reversed(descendants(master)):
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                break
            time.sleep(0.1)
        self.started = False
