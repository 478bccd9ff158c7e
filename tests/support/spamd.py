"""A real SpamAssassin spamd on a free loopback port.

Debian's ``spamd`` package is installed with apt-get if it is missing (the
Makefile's ``test`` target installs it up front). spamd runs in the foreground,
local tests only (``-L``: no DNS or network rules), without user configs (``-x``)
or Bayes, with the rules the package ships in /usr/share/spamassassin. If those
do not define GTUBE, a minimal rules directory defining it is written instead.
Ready means ``PING SPAMC/1.5`` is answered with ``PONG`` by our own process.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from .dnsserver import free_port
from .processes import stop_process

__all__ = ["GTUBE", "SpamdServer", "ensure_spamd", "spamd_binary"]

GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
PACKAGED_RULES = Path("/usr/share/spamassassin")
# The Check plugin does the scanning; without a .pre loading it spamd cannot scan.
MINIMAL_PRE = "loadplugin Mail::SpamAssassin::Plugin::Check\n"
MINIMAL_RULES = (
    "util_rb_tld com net org example\n"
    "required_score 5.0\n"
    "body GTUBE /XJS\\*C4JDBQADN1\\.NSBN3\\*2IDNEN\\*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL\\*C\\.34X/\n"
    "describe GTUBE Generic Test for Unsolicited Bulk Email\n"
    "score GTUBE 1000\n"
)


def spamd_binary() -> str | None:
    return shutil.which("spamd") or (
        "/usr/sbin/spamd" if os.path.exists("/usr/sbin/spamd") else None
    )


def ensure_spamd() -> str:
    """The spamd binary, installed with apt-get (as root) if missing."""
    found = spamd_binary()
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise RuntimeError("spamd not found; install it: apt-get install -y spamd")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env, capture_output=True)
    subprocess.run(
        ["apt-get", "install", "-y", "-q", "spamd"], check=True, env=env, capture_output=True
    )
    found = spamd_binary()
    if not found:
        raise RuntimeError("spamd still not found after apt-get install spamd")
    return found


def _packaged_rules_have_gtube() -> bool:
    if not PACKAGED_RULES.is_dir():
        return False
    for cf in PACKAGED_RULES.glob("*.cf"):
        try:
            if "body GTUBE" in cf.read_text(errors="replace"):
                return True
        except OSError:
            continue
    return False


class SpamdServer:
    def __init__(self) -> None:
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.dir: Path | None = None
        self.startup_seconds = 0.0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def log_text(self) -> str:
        return (self.dir / "spamd.log").read_text(errors="replace") if self.dir else ""

    def start(self) -> SpamdServer:
        binary = ensure_spamd()
        # World-readable: spamd's children run as nobody when we are root.
        self.dir = Path(tempfile.mkdtemp(prefix="elemta-spamd-"))
        self.dir.chmod(0o755)
        home = self.dir / "home"
        home.mkdir()
        config: list[str] = []
        if not _packaged_rules_have_gtube():
            rules = self.dir / "rules"
            rules.mkdir()
            (rules / "init.pre").write_text(MINIMAL_PRE)
            (rules / "gtube.cf").write_text(MINIMAL_RULES)
            rules.chmod(0o755)
            config = [f"--configpath={rules}", f"--siteconfigpath={rules}"]
        user = ["-u", "nobody"] if os.geteuid() == 0 else []
        if os.geteuid() == 0:
            home.chmod(0o777)
        for _ in range(5):
            self.port = free_port()
            args = [
                binary,
                "-x",  # no per-user config
                "-L",  # local tests only: no DNS, no network
                "-4",
                f"--listen=127.0.0.1:{self.port}",
                "--allowed-ips=127.0.0.1",
                "-m",
                "2",
                "--min-children=1",
                f"--helper-home-dir={home}",
                "--syslog=stderr",
                "--cf=use_bayes 0",
                "--cf=bayes_auto_learn 0",
                *user,
                *config,
            ]
            started = time.monotonic()
            log = open(self.dir / "spamd.log", "ab")
            try:
                self.proc = subprocess.Popen(args, stdout=log, stderr=log)
            finally:
                log.close()
            if self._wait_ready(timeout=30):
                self.startup_seconds = time.monotonic() - started
                return self
            exited = self.proc.poll() is not None
            self.stop(remove=False)
            if not exited:
                break  # running but never ready: another port will not help
        raise RuntimeError(f"spamd did not start:\n{self.log_text()[-3000:]}")

    def _wait_ready(self, timeout: float) -> bool:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False  # exited: port taken or bad config
            if self.ping():
                return True
            time.sleep(0.05)
        return False

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
                s.sendall(b"PING SPAMC/1.5\r\n\r\n")
                return b"PONG" in s.recv(100)
        except OSError:
            return False

    def stop(self, remove: bool = True) -> None:
        stop_process(self.proc)
        self.proc = None
        if remove and self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None
