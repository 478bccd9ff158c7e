"""What the command mixins use of the SMTP session they are mixed into.

:class:`.protocol.IngressSMTP` is aiosmtpd's ``SMTP`` plus four mixins, one per
group of commands (:class:`.smtpauth.AuthCommands`,
:class:`.chunking.ChunkingCommands`, :class:`.envelopecommands.EnvelopeCommands`,
:class:`.messagecommands.MessageCommands`). Each works on the session's state and
calls its helpers; :class:`SessionParts`, their common base, declares those once
for the type checker. At run time it is an empty class.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aiosmtpd.smtp import Envelope, Session

    from .dsnparams import DsnRequest
    from .protocol import SessionHost, Settings
    from .smtpauth import AuthUser

__all__ = ["SessionParts"]


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
