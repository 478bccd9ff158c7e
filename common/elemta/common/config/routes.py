"""Routes of the transport table (``smtp:[host]:port``, ``lmtp:host:port``, ``local``,
``mx``) and ``host:port`` addresses: parsed here, apart from the settings models,
because delivery and routing use them at run time as well as the models when they
validate a file."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict

_HOSTPORT = re.compile(r"^(?P<host>\[[^\]]+\]|[^:\s]+|)(?::(?P<port>\d{1,5}))$")


def split_hostport(value: str) -> tuple[str, int]:
    """Split ``host:port`` / ``[v6]:port`` into its parts."""
    m = _HOSTPORT.match(value.strip())
    if not m:
        raise ValueError(f"expected host:port, got {value!r}")
    host = m.group("host").strip("[]")
    port = int(m.group("port"))
    if not 0 <= port <= 65535:
        raise ValueError(f"port out of range in {value!r}")
    return host, port


class Route(BaseModel):
    """Where mail for a domain goes; see :class:`TransportSettings`."""

    model_config = ConfigDict(frozen=True)

    kind: str  # "mx" | "smtp" | "lmtp" | "local"
    host: str = ""
    port: int = 0
    mx_lookup: bool = True

    def key(self) -> str:
        """A stable destination key: the unit of connection reuse and job grouping."""
        if self.kind == "local":
            return "local"
        if self.kind == "mx":
            return f"mx:{self.host}"
        return f"{self.kind}:{self.host}:{self.port}:{int(self.mx_lookup)}"


def parse_route(text: str) -> Route:
    text = text.strip()
    if text in ("mx", ""):
        return Route(kind="mx")
    if text == "local":
        return Route(kind="local")
    kind, _, rest = text.partition(":")
    if kind not in ("smtp", "lmtp") or not rest:
        raise ValueError(f"unknown route {text!r}; use smtp:[host]:port, lmtp:host:port, local, mx")
    mx_lookup = not rest.startswith("[") and kind == "smtp"
    m = re.match(r"^\[?(?P<host>[^\]]*?)\]?(?::(?P<port>\d+))?$", rest)
    if rest.startswith("["):
        m = re.match(r"^\[(?P<host>[^\]]+)\](?::(?P<port>\d+))?$", rest)
    if not m or not m.group("host"):
        raise ValueError(f"bad host in route {text!r}")
    port = int(m.group("port") or (24 if kind == "lmtp" else 25))
    if not 1 <= port <= 65535:
        raise ValueError(f"port out of range in route {text!r}")
    return Route(kind=kind, host=m.group("host").lower(), port=port, mx_lookup=mx_lookup)
