"""Trying hosts in order over pooled sessions: shared by the SMTP and LMTP clients.

Hosts (MX hosts best first, or the one relay or LMTP server) are tried in
order, and each host's addresses in order (IPv4 then IPv6), until one takes the
transaction. A host that cannot be reached, greets with an error, or drops the
session before answering MAIL FROM is skipped; the first host that answers a
transaction decides the result. When every host failed, the result is the last
temporary failure if there was one (a later host may work tomorrow), else the
last failure.

With a TLS plan (SMTP only, see :mod:`.tlspolicy`) each host's requirement is
asked for before its addresses are tried; a host whose requirement cannot be
known now (a failed TLSA lookup) is skipped like an unreachable one. Sessions
are pooled per address, port and requirement, so a session authenticated for
one policy never carries mail held to another. A job held to a shared
connection limit (traffic shaping) brings a :class:`~.pool.Claim`: its sessions
are pooled apart, per destination, each holding a slot of the limit.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Generic, Protocol, TypeVar

from elemta.common.envelope import DeliveryJob, RecipientResult
from elemta.common.replies import Reply, Status
from elemta.common.resolver import DnsError, Resolver

from .errors import SessionFailure
from .outcome import Delivery
from .pool import Claim, Pool
from .tlspolicy import TlsRequirement

log = logging.getLogger(__name__)

__all__ = ["SessionTransport", "TransactionSession", "always_recordable", "path_bytes", "peer_name"]


class TransactionSession(Protocol):
    @property
    def usable(self) -> bool: ...
    @property
    def clean(self) -> bool: ...
    async def reset(self) -> bool: ...
    async def quit(self) -> None: ...
    def close(self) -> None: ...
    async def send(self, job: DeliveryJob, body: bytes) -> list[RecipientResult]: ...


S = TypeVar("S", bound=TransactionSession)


def always_recordable() -> bool:
    """Outcomes can always be recorded: no check before the end of data.

    Sessions take a ``recordable`` callable (the delivery service passes "the NATS
    connection is up"): a delivery whose end of data went out while its outcome
    could not be recorded would be made again when the message is offered again,
    so neither client sends the end of data then (:data:`.errors.NOT_RECORDABLE`).
    """
    return True


def path_bytes(addr: str) -> bytes:
    """``<addr>`` for MAIL FROM and RCPT TO; ValueError on a control character."""
    # isprintable() is false for every control character: one C pass for the
    # usual address, the exact test only for one it rejects (a non-ASCII space)
    if not addr.isprintable() and any(ord(ch) < 32 or ord(ch) == 127 for ch in addr):
        raise ValueError(f"control character in address {addr!r}")
    return b"<" + addr.encode("utf-8") + b">"


def peer_name(name: str, addr: str, port: int) -> str:
    """Postfix style: ``mx.example.org[192.0.2.1]:25``."""
    return f"{name}[{addr}]:{port}"


Pacer = Callable[[], Awaitable[None]]


class SessionTransport(Generic[S]):
    """Subclasses say how to open a session; this walks the hosts."""

    def __init__(self, resolver: Resolver, pool: Pool[S]) -> None:
        self.resolver = resolver
        self.pool = pool

    async def open(self, name: str, addr: str, port: int, tls: TlsRequirement | None = None) -> S:
        """A ready session (greeted, EHLO/LHLO done); raises :class:`SessionFailure`."""
        raise NotImplementedError

    async def send_to_hosts(
        self,
        job: DeliveryJob,
        body: bytes,
        hosts: list[str],
        port: int,
        tls: Callable[[str], Awaitable[TlsRequirement]] | None = None,
        pacer: Pacer | None = None,
        claim: Claim | None = None,
    ) -> Delivery:
        """Try ``hosts`` in order. ``pacer`` is awaited before the transaction, and
        a new session needs a slot of ``claim`` (traffic shaping)."""
        last: tuple[str, Reply] | None = None
        temporary: tuple[str, Reply] | None = None
        for name in hosts:
            try:
                addresses = await self.resolver.addresses(name)
                requirement = await tls(name) if tls is not None else None
            except DnsError as exc:
                last = (name, exc.reply)
                if last[1].status == Status.DEFERRED:
                    temporary = last
                continue
            except SessionFailure as exc:
                last = (name, exc.reply)
                if exc.reply.status == Status.DEFERRED:
                    temporary = last
                continue
            for addr in addresses:
                peer = peer_name(name, addr, port)
                try:
                    return await self._send_via(
                        job, body, name, addr, port, requirement, pacer, claim
                    )
                except SessionFailure as exc:
                    last = (peer, exc.reply)
                    if exc.reply.status == Status.DEFERRED:
                        temporary = last
        if last is None:
            return Delivery.everyone(job, "", Reply(451, "4.3.5", "no host to deliver to"))
        host, reply = temporary or last
        return Delivery.everyone(job, host, reply)

    async def _send_via(
        self,
        job: DeliveryJob,
        body: bytes,
        name: str,
        addr: str,
        port: int,
        tls: TlsRequirement | None = None,
        pacer: Pacer | None = None,
        claim: Claim | None = None,
    ) -> Delivery:
        key: tuple[object, ...] = (addr, port) if tls is None else (addr, port, tls.key())
        if claim is not None:
            key = (*key, claim.key)
        opener = functools.partial(self.open, name, addr, port, tls)
        while True:
            session = await self.pool.acquire(key, opener, claim)
            unchecked = self.pool.unchecked(session)
            reuse = False
            try:
                if pacer is not None:
                    await pacer()
                    pacer = None
                results = await session.send(job, body)
                reuse = session.usable
                return Delivery(peer_name(name, addr, port), results)
            except SessionFailure:
                # Reused without RSET and gone before MAIL FROM was answered (the
                # peer closed it meanwhile): nothing was sent, another session may.
                if not unchecked:
                    raise
                log.debug("reused session to %s was gone; trying another", addr)
            finally:
                self.pool.release(key, session, reuse)
