"""A real rspamd (Debian's) on a free loopback port with a configuration of its own.

Only the normal worker runs (no controller, proxy or fuzzy storage); Redis is
not configured, so the modules that need it stay off. DNS goes to a dead local
port with a short timeout, so the network checks fail fast instead of reaching
out, and the URL suffix list is a short one of its own (the full list takes
rspamd most of a minute to compile). ``milter_headers`` adds ``X-Spamd-Bar`` to every message, local ones too.
If ``rspamd`` is missing it is installed with apt-get, as ``make test`` does.
"""

from __future__ import annotations

import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from .dnsserver import free_port
from .milters import debian_binary
from .processes import stop_process

__all__ = ["RspamdServer"]

CONFIG = """\
.include "$CONFDIR/common.conf"
options {{
  .include "$CONFDIR/options.inc"
  .include(priority=10) "{dir}/options.inc"
}}
logging {{
  type = "file";
  filename = "{dir}/rspamd.log";
  level = "warning";
}}
worker "normal" {{
  bind_socket = "127.0.0.1:{port}";
  .include "$CONFDIR/worker-normal.inc"
  count = 1;
}}
"""
OPTIONS = """dns {{ nameserver = ["127.0.0.1:{dead}"]; timeout = 0.1s; retransmits = 1; }}
local_addrs = [];
url_tld = "{dir}/tlds.dat";
"""


class RspamdServer:
    def __init__(self, workdir: Path) -> None:
        self.dir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> RspamdServer:
        local = self.dir / "local.d"
        local.mkdir(parents=True, exist_ok=True)
        (self.dir / "db").mkdir(exist_ok=True)
        conf = self.dir / "rspamd.conf"
        conf.write_text(CONFIG.format(dir=self.dir, port=self.port))
        (self.dir / "options.inc").write_text(OPTIONS.format(dir=self.dir, dead=free_port()))
        (self.dir / "tlds.dat").write_text("com\norg\nnet\ntest\nexample\n")
        (local / "milter_headers.conf").write_text(
            'use = ["x-spamd-bar"];\nskip_local = false;\nskip_authenticated = false;\n'
        )
        out = open(self.dir / "rspamd.out", "ab")  # noqa: SIM115 - handed to the process
        self.proc = subprocess.Popen(
            [
                debian_binary("rspamd", "rspamd"),
                "-f",
                "-i",
                "-u",
                "root",
                "-g",
                "root",
                "-c",
                str(conf),
                "--var",
                f"LOCAL_CONFDIR={self.dir}",
                "--var",
                f"DBDIR={self.dir / 'db'}",
                "--var",
                f"RUNDIR={self.dir}",
            ],
            stdout=out,
            stderr=out,
        )
        out.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"rspamd exited {self.proc.returncode}: {self.log()}")
            try:
                with urllib.request.urlopen(f"{self.url}/ping", timeout=1) as r:
                    if r.read().strip() == b"pong":
                        return self
            except (urllib.error.URLError, OSError):
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"rspamd did not answer /ping: {self.log()}")

    def log(self) -> str:
        text = ""
        for name in ("rspamd.out", "rspamd.log"):
            try:
                text += (self.dir / name).read_text(errors="replace")[-2000:]
            except FileNotFoundError:
                pass
        return text

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None
