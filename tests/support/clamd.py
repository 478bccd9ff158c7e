"""A real clamd on a free loopback port with a tiny, local signature database.

Signatures cannot be downloaded in tests, so the database is one body
signature (``.ndb``, target type 0: any file) matching the EICAR test string;
clamd scans the raw stream, so EICAR inside a plain-text MIME body is found.
If ``clamd`` is missing it is installed with apt-get (Debian's clamav-daemon).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

from .dnsserver import free_port
from .processes import stop_process

__all__ = ["EICAR", "SIGNATURE", "ClamdServer", "clamd_binary"]

EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
SIGNATURE = "Elemta.Test.EICAR"


def clamd_binary() -> str:
    found = shutil.which("clamd") or (
        "/usr/sbin/clamd" if Path("/usr/sbin/clamd").exists() else None
    )
    if found:
        return found
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", "clamav-daemon"], check=True, env=env)
    return shutil.which("clamd") or "/usr/sbin/clamd"


class ClamdServer:
    def __init__(self, workdir: Path, extra: list[str] | None = None) -> None:
        self.dir = workdir
        self.extra = list(extra or [])
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        db = self.dir / "db"
        db.mkdir(exist_ok=True)
        (db / "elemta.ndb").write_text(f"{SIGNATURE}:0:*:{EICAR.hex()}\n")
        conf = self.dir / "clamd.conf"
        conf.write_text(
            "\n".join(
                [
                    "Foreground yes",
                    "TCPAddr 127.0.0.1",
                    f"TCPSocket {self.port}",
                    f"DatabaseDirectory {db}",
                    f"LogFile {self.dir / 'clamd.log'}",
                    f"PidFile {self.dir / 'clamd.pid'}",
                    f"TemporaryDirectory {self.dir}",
                    "User root",
                    "SelfCheck 3600",
                    *self.extra,
                    "",
                ]
            )
        )
        self.proc = subprocess.Popen(
            [clamd_binary(), "--config-file", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise RuntimeError(f"clamd exited {self.proc.returncode}: {err}")
            if self.ping():
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("clamd did not answer PING")

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"zPING\0")
                return s.recv(16).startswith(b"PONG")
        except OSError:
            return False

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None
