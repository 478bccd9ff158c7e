"""Real milters from Debian on free loopback ports: OpenDKIM and clamav-milter.

Each writes its own configuration in a temp directory and runs in the
foreground; a missing binary is installed with apt-get (Debian's ``opendkim``
and ``clamav-milter``), as ``make test`` does.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from .dnsserver import free_port
from .processes import stop_process

__all__ = ["ClamavMilter", "OpenDkim", "debian_binary"]


def debian_binary(name: str, package: str) -> str:
    """The path of ``name``, installing Debian's ``package`` if it is missing."""
    found = shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if Path(p).exists()), None
    )
    if found:
        return found
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", package], check=True, env=env)
    return shutil.which(name) or f"/usr/sbin/{name}"


class _Daemon:
    """A foreground daemon listening on ``self.port``."""

    name = "daemon"
    stop_wait = 10.0  # seconds between SIGTERM and SIGKILL

    def __init__(self, workdir: Path) -> None:
        self.dir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"inet:127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self, timeout: float = 30.0) -> _Daemon:
        self.dir.mkdir(parents=True, exist_ok=True)
        log = open(self.dir / f"{self.name}.out", "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(self.command(), stdout=log, stderr=log)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited {self.proc.returncode}: {self.output()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.name} did not listen: {self.output()}")

    def output(self) -> str:
        try:
            return (self.dir / f"{self.name}.out").read_text(errors="replace")[-3000:]
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        stop_process(self.proc, self.stop_wait)
        self.proc = None


class OpenDkim(_Daemon):
    """OpenDKIM signing mail from ``domain`` with selector ``selector`` (a fresh RSA key)."""

    name = "opendkim"

    def __init__(self, workdir: Path, domain: str = "example.org", selector: str = "milter"):
        super().__init__(workdir)
        self.domain = domain
        self.selector = selector
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
        public = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        import base64

        self.dns_txt = f"v=DKIM1; k=rsa; p={base64.b64encode(public).decode()}"

    def command(self) -> list[str]:
        key_file = self.dir / "dkim.key"
        key_file.write_bytes(self.key_pem)
        key_file.chmod(0o600)
        conf = self.dir / "opendkim.conf"
        conf.write_text(
            "\n".join(
                [
                    "Syslog no",
                    "Background no",
                    f"Socket inet:{self.port}@127.0.0.1",
                    f"Domain {self.domain}",
                    f"Selector {self.selector}",
                    f"KeyFile {key_file}",
                    "Mode sv",
                    "Canonicalization relaxed/simple",
                    f"PidFile {self.dir / 'opendkim.pid'}",
                    "RequireSafeKeys no",
                    "UserID root",
                    "",
                ]
            )
        )
        return [debian_binary("opendkim", "opendkim"), "-f", "-x", str(conf)]


class ClamavMilter(_Daemon):
    """clamav-milter in front of a clamd; infected mail is refused with the virus name."""

    name = "clamav-milter"
    stop_wait = 1.0  # it lingers for seconds on SIGTERM, and keeps nothing

    def __init__(self, workdir: Path, clamd_address: str) -> None:
        super().__init__(workdir)
        self.clamd_address = clamd_address

    def command(self) -> list[str]:
        conf = self.dir / "clamav-milter.conf"
        conf.write_text(
            "\n".join(
                [
                    f"MilterSocket inet:{self.port}@127.0.0.1",
                    f"ClamdSocket tcp:{self.clamd_address}",
                    "Foreground yes",
                    "User root",
                    f"PidFile {self.dir / 'clamav-milter.pid'}",
                    f"TemporaryDirectory {self.dir}",
                    f"LogFile {self.dir / 'clamav-milter.log'}",
                    "OnInfected Reject",
                    "RejectMsg Virus found: %v",
                    "OnClean Accept",
                    "AddHeader Replace",
                    "",
                ]
            )
        )
        return [debian_binary("clamav-milter", "clamav-milter"), "--config-file", str(conf)]
