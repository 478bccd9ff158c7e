"""Where each recipient goes, and how recipients are grouped into delivery jobs.

The lookup order is Postfix's ``transport_maps`` order, with local domains first:

1. the recipient domain is in ``server.local_domains``: ``local`` (Maildir);
2. the transport table, exact domain;
3. the transport table, ``.parent`` keys, longest parent first, so
   ``.example.org`` matches ``a.b.example.org`` (but not ``example.org`` itself);
4. the transport table, ``*``;
5. otherwise MX delivery to the recipient domain.

Recipients that share a :meth:`Route.key` share a job: one connection to a
relay can carry mail for many domains, while MX routes are keyed by domain.
Delivery plans a message's first attempt with it, the queue every later one; a
first-attempt report carries its destinations, so the two never need to agree on
a configuration to understand each other.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from .config import Config, Route, parse_route

__all__ = ["Destination", "Router", "dest_hash", "domain_of"]


def domain_of(recipient: str) -> str:
    """The lower-cased domain of an address; empty for a bare local part."""
    return recipient.rpartition("@")[2].strip().lower().rstrip(".") if "@" in recipient else ""


def dest_hash(dest: str) -> str:
    """A short stable token for a destination key, safe inside a ``Nats-Msg-Id``."""
    return hashlib.blake2s(dest.encode(), digest_size=6).hexdigest()


@dataclass
class Destination:
    """One delivery job's worth of recipients."""

    key: str
    route: Route
    domain: str
    recipients: list[str] = field(default_factory=list)


class Router:
    """Resolves recipients to routes; built once from the configuration."""

    def __init__(self, cfg: Config) -> None:
        self.local = frozenset(cfg.server.local_domains)
        self.exact: dict[str, Route] = {}
        self.parents: dict[str, Route] = {}
        self.default: Route | None = None
        for key, text in cfg.transport.routes.items():
            route = parse_route(text)
            key = key.strip().lower().rstrip(".")
            if key == "*":
                self.default = route
            elif key.startswith("."):
                self.parents[key] = route
            else:
                self.exact[key] = route

    def route(self, recipient: str) -> Route:
        domain = domain_of(recipient)
        if domain in self.local:
            return Route(kind="local")
        route = self._lookup(domain)
        if route is None or route.kind == "mx":
            # "mx" in the table means "the default", i.e. MX of the recipient domain.
            return Route(kind="mx", host=domain)
        return route

    def _lookup(self, domain: str) -> Route | None:
        hit = self.exact.get(domain)
        if hit is not None:
            return hit
        if self.parents:
            labels = domain.split(".")
            # Longest parent first: ".b.example.org" before ".example.org".
            for i in range(1, len(labels)):
                hit = self.parents.get("." + ".".join(labels[i:]))
                if hit is not None:
                    return hit
        return self.default

    def plan(self, recipients: list[str]) -> list[Destination]:
        """Group recipients by destination key, keeping their order, dropping duplicates."""
        dests: dict[str, Destination] = {}
        seen: set[str] = set()
        for rcpt in recipients:
            if rcpt in seen:
                continue
            seen.add(rcpt)
            route = self.route(rcpt)
            key = route.key()
            dest = dests.get(key)
            if dest is None:
                domain = route.host if route.kind == "mx" else domain_of(rcpt)
                dest = dests[key] = Destination(key=key, route=route, domain=domain)
            dest.recipients.append(rcpt)
        return list(dests.values())
