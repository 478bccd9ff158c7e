"""Private database and directory servers for the user-store tests: PostgreSQL
(``initdb``/``pg_ctl``), MariaDB (``mariadb-install-db``/``mariadbd``) and OpenLDAP
(``slapd`` with a ``slapd.conf``), each in a temporary folder on a free port, as
Debian installs them (``make test`` installs the packages when missing).

PostgreSQL refuses to run as root: as root, the server runs as the ``postgres``
user the Debian package creates, in a folder handed to it.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from .dnsserver import free_port
from .processes import stop_process

__all__ = ["MariaDbServer", "PostgresServer", "SlapdServer", "binary"]


def binary(name: str, *patterns: str) -> str | None:
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if found:
        return found
    for pattern in patterns:
        hits = sorted(glob.glob(pattern))
        if hits:
            return hits[-1]
    return None


def _wait_port(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"exited {proc.returncode}: {log.read_text(errors='replace')[-3000:]}"
            )
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"not listening after {timeout}s: {log.read_text(errors='replace')[-3000:]}")


class PostgresServer:
    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="elemta-pg-"))
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.user: str | None = "postgres" if os.geteuid() == 0 else None

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://elemta:elemta-pw@127.0.0.1:{self.port}/elemta"

    def _run(self, *args: str) -> None:
        subprocess.run(list(args), check=True, capture_output=True, user=self.user)

    def start(self) -> PostgresServer:
        initdb = binary("initdb", "/usr/lib/postgresql/*/bin/initdb")
        postgres = binary("postgres", "/usr/lib/postgresql/*/bin/postgres")
        if not initdb or not postgres:
            raise RuntimeError("PostgreSQL is not installed (make test installs it)")
        if self.user:
            pw = pwd.getpwnam(self.user)
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        data = self.dir / "data"
        pwfile = self.dir / "pw"
        pwfile.write_text("elemta-pw\n")
        if self.user:
            os.chown(pwfile, pwd.getpwnam(self.user).pw_uid, -1)
        self._run(
            initdb, "-D", str(data), "-U", "elemta", f"--pwfile={pwfile}", "-A", "scram-sha-256",
            "--no-sync",
        )  # fmt: skip
        log = self.dir / "postgres.log"
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                [
                    postgres, "-D", str(data), "-p", str(self.port), "-h", "127.0.0.1",
                    "-k", str(self.dir), "-c", "fsync=off",
                ],
                stdout=out, stderr=out, user=self.user,
            )  # fmt: skip
        _wait_port(self.port, self.proc, log)
        import psycopg

        deadline = time.monotonic() + 30
        while True:
            try:
                with psycopg.connect(
                    host="127.0.0.1", port=self.port, user="elemta", password="elemta-pw",
                    dbname="postgres", autocommit=True,
                ) as conn:  # fmt: skip
                    conn.execute("CREATE DATABASE elemta")
                return self
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def stop(self) -> None:
        stop_process(self.proc, 20)
        shutil.rmtree(self.dir, ignore_errors=True)


class MariaDbServer:
    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="elemta-mariadb-"))
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mysql+pymysql://elemta:elemta-pw@127.0.0.1:{self.port}/elemta"

    def start(self) -> MariaDbServer:
        install = binary("mariadb-install-db", "/usr/bin/mysql_install_db")
        server = binary("mariadbd", "/usr/sbin/mysqld")
        if not install or not server:
            raise RuntimeError("MariaDB is not installed (make test installs it)")
        data = self.dir / "data"
        user = ["--user=root"] if os.geteuid() == 0 else []
        subprocess.run(
            [
                install, "--no-defaults", f"--datadir={data}", "--auth-root-authentication-method=normal",
                "--skip-test-db", *user,
            ],
            check=True, capture_output=True,
        )  # fmt: skip
        log = self.dir / "mariadb.log"
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                [
                    server, "--no-defaults", f"--datadir={data}", f"--port={self.port}",
                    "--bind-address=127.0.0.1", f"--socket={self.dir / 'sock'}",
                    f"--pid-file={self.dir / 'pid'}", "--skip-log-bin", "--innodb-flush-log-at-trx-commit=0",
                    *user,
                ],
                stdout=out, stderr=out,
            )  # fmt: skip
        _wait_port(self.port, self.proc, log)
        import pymysql

        conn = pymysql.connect(host="127.0.0.1", port=self.port, user="root", password="")
        with conn.cursor() as cur:
            cur.execute("CREATE DATABASE elemta CHARACTER SET utf8mb4")
            cur.execute("CREATE USER 'elemta'@'%' IDENTIFIED BY 'elemta-pw'")
            cur.execute("GRANT ALL ON elemta.* TO 'elemta'@'%'")
        conn.commit()
        conn.close()
        return self

    def stop(self) -> None:
        stop_process(self.proc, 30)
        shutil.rmtree(self.dir, ignore_errors=True)


SLAPD_CONF = """\
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
include /etc/ldap/schema/nis.schema
modulepath /usr/lib/ldap
moduleload back_mdb
pidfile {dir}/slapd.pid
database mdb
maxsize 10485760
suffix "dc=elemta,dc=test"
rootdn "cn=admin,dc=elemta,dc=test"
rootpw {rootpw}
directory {dir}/data
access to attrs=userPassword by anonymous auth by self read by * none
access to * by * read
"""


class SlapdServer:
    """OpenLDAP with the suffix ``dc=elemta,dc=test``; ``admin_dn``/``admin_password``
    write entries (ldap3)."""

    admin_dn = "cn=admin,dc=elemta,dc=test"
    admin_password = "admin-pw"
    base = "dc=elemta,dc=test"

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="elemta-slapd-"))
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"ldap://127.0.0.1:{self.port}"

    def start(self) -> SlapdServer:
        slapd = binary("slapd")
        if not slapd:
            raise RuntimeError("slapd is not installed (make test installs it)")
        (self.dir / "data").mkdir()
        conf = self.dir / "slapd.conf"
        conf.write_text(SLAPD_CONF.format(dir=self.dir, rootpw=self.admin_password))
        log = self.dir / "slapd.log"
        with open(log, "ab") as out:
            # -d keeps slapd in the foreground (a child of the test, stopped with it)
            self.proc = subprocess.Popen(
                [slapd, "-f", str(conf), "-h", f"ldap://127.0.0.1:{self.port}/", "-d", "0"],
                stdout=out,
                stderr=out,
            )
        _wait_port(self.port, self.proc, log)
        return self

    def stop(self) -> None:
        stop_process(self.proc, 20)
        shutil.rmtree(self.dir, ignore_errors=True)
