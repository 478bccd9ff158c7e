"""SMTP AUTH (RFC 4954) on the ingress side: the PLAIN and LOGIN exchanges, the
login checked by policy (``Authenticate``), and the sender-login map.

Credentials are only ever read inside TLS (``538 5.7.11`` otherwise); the login
and password go to policy and nowhere else (never logged, never in
``Received:``). Replies (``docs/decisions.md``, "SMTP AUTH"):

* ``235 2.7.0`` success; ``535 5.7.8`` wrong login or password, said after a
  delay that grows with the failures policy has counted (a guesser slows down);
* ``454 4.7.0`` locked out (too many failures for the address or the login,
  across every replica) or the user store is unreachable: try later;
* ``421 4.7.0`` after ``ingress.auth_max_failures`` failed AUTH in one session;
* ``504 5.5.4`` a mechanism other than PLAIN or LOGIN; ``501 5.5.2`` bad base64
  or a malformed PLAIN message; ``501 5.7.0`` the client cancelled with ``*``.

An authenticated user may relay, and the envelope sender must be one of the
addresses it owns (``alice@example.org``, or ``@example.org`` for the domain):
``553 5.7.1`` otherwise. The null sender is allowed (a user's own notices).

:class:`AuthCommands` is the ``AUTH`` command of :class:`.protocol.IngressSMTP`,
mixed in ahead of aiosmtpd's ``SMTP`` so that aiosmtpd dispatches to it and not
to its own ``smtp_AUTH``. The checks at MAIL (AUTH required, the sender owned)
stay with MAIL in :mod:`.protocol`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from elemta.rpc.policy.v1 import policy_pb2 as pb

from .policy_client import PolicyClient, PolicyUnavailable
from .sessionparts import SessionParts

if TYPE_CHECKING:
    pass

__all__ = [
    "AUTH_ENCRYPTION_REQUIRED",
    "AUTH_REQUIRED",
    "AuthCommands",
    "AuthUser",
    "MECHANISMS",
    "Challenger",
    "SENDER_NOT_OWNED",
    "check_login",
    "owns",
    "read_credentials",
]

AUTH_OK = "235 2.7.0 Authentication successful"
AUTH_FAILED = "535 5.7.8 Error: authentication failed"
AUTH_LOCKED = "454 4.7.0 Too many failed authentications, try again later"
AUTH_UNAVAILABLE = "454 4.7.0 Temporary authentication failure, try again later"
AUTH_ENCRYPTION_REQUIRED = "538 5.7.11 Encryption required for requested authentication mechanism"
AUTH_REQUIRED = "530 5.7.0 Authentication required"
AUTH_BAD_MECHANISM = "504 5.5.4 Unrecognized authentication type"
AUTH_BAD_BASE64 = "501 5.5.2 Cannot decode response"
SENDER_NOT_OWNED = "553 5.7.1 Sender address rejected: not owned by the authenticated user"

MECHANISMS = ("PLAIN", "LOGIN")

# The session's log lines keep the session's logger name (``logger`` in JSON logs).
log = logging.getLogger("elemta.ingress.protocol")


@dataclass(frozen=True)
class AuthUser:
    login: str
    addresses: tuple[str, ...]


class Challenger(Protocol):
    """aiosmtpd's ``challenge_auth``: send ``334 <challenge>``, read one line
    (decoded from base64), or aiosmtpd's MISSING after it answered ``*`` or bad base64."""

    async def challenge_auth(
        self, challenge: str | bytes, encode_to_b64: bool = True, log_client_response: bool = False
    ) -> Any: ...


def _b64(text: str) -> bytes | None:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


async def read_credentials(client: Challenger, arg: str) -> tuple[str, str] | str | None:
    """``(login, password)`` from the exchange ``AUTH <arg>`` starts; a reply string
    when it is malformed; None when the client cancelled (already answered)."""
    mechanism, _, initial = arg.strip().partition(" ")
    mechanism, initial = mechanism.upper(), initial.strip()
    if mechanism == "PLAIN":
        if initial == "=":
            blob: bytes | None = b""
        elif initial:
            blob = _b64(initial)
        else:
            answer = await client.challenge_auth("", encode_to_b64=False)
            if not isinstance(answer, bytes):
                return None
            blob = answer
        if blob is None:
            return AUTH_BAD_BASE64
        parts = blob.split(b"\0")
        if len(parts) != 3:
            return AUTH_BAD_BASE64
        authzid, login, password = (p.decode("utf-8", "replace") for p in parts)
        if authzid and authzid != login:
            return AUTH_FAILED  # acting as another user is not offered
        return login, password
    if mechanism == "LOGIN":
        if initial:
            first = _b64(initial)
            if first is None:
                return AUTH_BAD_BASE64
        else:
            answer = await client.challenge_auth("Username:")
            if not isinstance(answer, bytes):
                return None
            first = answer
        secret = await client.challenge_auth("Password:")
        if not isinstance(secret, bytes):
            return None
        return first.decode("utf-8", "replace"), secret.decode("utf-8", "replace")
    return AUTH_BAD_MECHANISM


@dataclass(frozen=True)
class LoginResult:
    reply: str
    user: AuthUser | None = None
    failures: int = 0


async def check_login(policy: PolicyClient, login: str, password: str, ip: str) -> LoginResult:
    """Ask policy; the reply to say and, on success, the user."""
    if not login or not password:
        return LoginResult(AUTH_FAILED, failures=1)
    try:
        answer = await policy.authenticate(login, password, ip)
    except PolicyUnavailable:
        return LoginResult(AUTH_UNAVAILABLE)
    if answer.result == pb.AUTH_RESULT_OK:
        user = AuthUser(answer.user.login, tuple(answer.user.addresses))
        return LoginResult(AUTH_OK, user)
    if answer.result == pb.AUTH_RESULT_INVALID:
        return LoginResult(AUTH_FAILED, failures=max(1, answer.failures))
    if answer.result == pb.AUTH_RESULT_LOCKED:
        return LoginResult(AUTH_LOCKED, failures=answer.failures)
    return LoginResult(AUTH_UNAVAILABLE)


def owns(user: AuthUser, sender: str) -> bool:
    """``sender`` is one of the user's addresses or in one of its ``@domain``s."""
    if not sender:
        return True
    address = sender.strip().lower()
    domain = address.rpartition("@")[2]
    return address in user.addresses or f"@{domain}" in user.addresses


class AuthCommands(SessionParts):
    """``AUTH`` (RFC 4954) for the session it is mixed into (:class:`.protocol.IngressSMTP`).

    Offered only on listeners that offer it and only inside TLS; one AUTH per
    session, never inside a mail transaction. A wrong login or password is
    answered after a delay that grows with the failures policy counted, and
    ``ingress.auth_max_failures`` of them in one session end it with a 421.
    """

    async def smtp_AUTH(self, arg: str) -> None:  # noqa: N802
        if not self.settings.offers_auth:
            await self.push("503 5.5.1 Error: authentication not enabled")
            return
        if self.session is None or not self.session.extended_smtp:
            await self.push("503 5.5.1 Error: send EHLO first")
            return
        if self.user is not None:
            await self.push("503 5.5.1 Error: already authenticated")
            return
        if self.in_transaction:
            await self.push("503 5.5.1 Error: MAIL transaction in progress")
            return
        if not arg:
            await self.push("501 5.5.4 Syntax: AUTH mechanism [initial-response]")
            return
        if not self.tls:
            await self.push(AUTH_ENCRYPTION_REQUIRED)
            return
        got = await read_credentials(self, arg)
        if got is None:  # cancelled or undecodable: aiosmtpd has answered
            return
        if isinstance(got, str):
            await self.push(got)
            return
        login, password = got
        result = await check_login(self.settings.stages.policy, login, password, self.peer[0])
        if result.user is not None:
            self.user = result.user
            self._auth_failures = 0
            log.info("authenticated: client=%s mechanism=%s", self.peer[0], arg.split()[0].upper())
            await self.push(result.reply)
            return
        if result.reply.startswith("535"):
            self._auth_failures += 1
            delay = min(self.settings.auth_failure_delay * result.failures, 10.0)
            if delay:
                await asyncio.sleep(delay)
        if self._auth_failures >= self.settings.auth_max_failures:
            self.goodbye(f"421 4.7.0 {self.hostname} Error: too many failed authentications")
            return
        await self.push(result.reply)
