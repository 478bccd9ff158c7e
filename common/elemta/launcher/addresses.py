"""Addresses and ports: parsing ``host:port``, free ports, and the concrete addresses
that replace every port 0 in the configuration."""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from elemta.common.config import Config


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
