"""What an SMTP session is given, and what its command mixins use of it.

A session (:class:`.protocol.IngressSMTP`) is made with its listener's
:class:`Settings` and the :class:`SessionHost` that runs it (the server).

It is aiosmtpd's ``SMTP`` plus four mixins, one per group of commands
(:class:`.smtpauth.AuthCommands`, :class:`.chunking.ChunkingCommands`,
:class:`.envelopecommands.EnvelopeCommands`,
:class:`.messagecommands.MessageCommands`). Each works on the session's state and
calls its helpers; :class:`SessionParts`, their common base, declares those once
for the type checker. At run time it is an empty class.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import ssl

    from aiosmtpd.smtp import Envelope, Session

    from elemta.common.resolver import Resolver

    from .dsnparams import DsnRequest
    from .limits import ClientLimits
    from .protocol import IngressSMTP
    from .relay import RelayControl
    from .smtpauth import AuthUser
    from .stages import StageChecks
    from .tlscontext import ListenerTls
    from .transaction import MessageProcessor

__all__ = ["SessionHost", "SessionParts", "Settings"]


@dataclass
class Settings:
    """A listener's settings and collaborators, one object shared by its sessions."""

    hostname: str
    max_message_size: int
    max_recipients: int
    max_line_length: int
    command_timeout: float
    data_timeout: float
    processing_timeout: float
    tls_context: ssl.SSLContext | None
    relay: RelayControl
    processor: MessageProcessor
    stages: StageChecks
    tls: ListenerTls | None = None  # the listener's certificate, level and TLS metrics
    limits: ClientLimits | None = None  # per-client limits shared by the replicas
    resolver: Resolver | None = None  # for the client's name (FCrDNS); None: no lookup
    client_name_timeout: float = 2.0
    role: str = "mta"  # mta | submission | submissions
    implicit_tls: bool = False  # the listener's socket is TLS from the first byte
    offers_auth: bool = False
    requires_auth: bool = False
    auth_failure_delay: float = 1.0
    auth_max_failures: int = 3
    mt_priority: bool = False  # offer MT-PRIORITY (RFC 6710): priorities.enabled


class SessionHost(Protocol):
    """What a session needs from the server that runs it."""

    draining: bool

    def session_opened(self, session: IngressSMTP) -> None: ...
    def session_closed(self, session: IngressSMTP) -> None: ...
    def track(self, task: asyncio.Task[str]) -> None: ...


class SessionParts:
    """The session's state and helpers that the command mixins use."""

    if TYPE_CHECKING:
        settings: Settings
        session: Session | None
        envelope: Envelope | None
        host: SessionHost
        hostname: str
        transport: asyncio.BaseTransport | None
        user: AuthUser | None
        dsn: DsnRequest
        _reader: asyncio.StreamReader
        _chunks: bytearray | None
        _chunks_too_big: bool
        _in_data: bool
        _processing: bool
        _errors: int
        _data_limit: int
        _mt_priority: int | None
        _connect_checked: bool
        _auth_failures: int

        @property
        def tls(self) -> bool: ...
        @property
        def peer(self) -> tuple[str, int]: ...
        @property
        def in_transaction(self) -> bool: ...
        async def push(self, status: Any) -> None: ...
        def goodbye(self, reply: str = ...) -> None: ...
        async def check_helo_needed(self, helo: str = "HELO") -> bool: ...
        async def client_name(self) -> str: ...
        async def challenge_auth(
            self,
            challenge: str | bytes,
            encode_to_b64: bool = True,
            log_client_response: bool = False,
        ) -> Any: ...
        def _arm(self, seconds: float) -> None: ...
        def _new_transaction(self) -> None: ...
        def _log_reject(
            self, stage: str, reply: str, envelope: Envelope | None, to: str = "", sender: str = ""
        ) -> None: ...
        async def _complete(
            self, raw: bytes | None, envelope: Envelope, ended: float, chunked: bool = False
        ) -> None: ...
