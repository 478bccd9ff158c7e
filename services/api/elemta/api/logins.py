"""Console logins with a user name and password, checked by the policy service.

The api never reads the user store: it asks policy's ``Authenticate`` RPC (as
ingress does for SMTP AUTH), so the store's credentials stay with policy, and a
lockout counts console and SMTP failures together across every replica.

A user's console role is the most powerful of its roles that the permission
table knows (``admin``, ``operator``, ``readonly``, ``user``); a user with none
of them may send mail but not log in to the console. A ``user`` sees the mail of
its addresses (``@domain`` entries: every address of the domain).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

import grpc

from elemta.common.apikeys import ROLES
from elemta.common.config import Config
from elemta.common.tlsfiles import GrpcClientTls
from elemta.rpc.policy.v1 import policy_pb2 as pb
from elemta.rpc.policy.v1 import policy_pb2_grpc as pb_grpc

__all__ = ["LoginResult", "PasswordLogins", "console_role"]

log = logging.getLogger(__name__)

TIMEOUT = 5.0


@dataclass(frozen=True)
class LoginResult:
    result: str  # "ok", "invalid", "locked", "unavailable", "no-role"
    login: str = ""
    role: str = ""
    addresses: list[str] = field(default_factory=list)
    retry_after: int = 0


def console_role(roles: list[str]) -> str:
    """The most powerful console role among a user's roles; "" for none."""
    have = {r.strip().lower() for r in roles}
    return next((r for r in ROLES if r in have), "")


class PasswordLogins:
    """A gRPC channel to policy, opened at the first login, for ``Authenticate``."""

    def __init__(self, cfg: Config) -> None:
        p = cfg.policy
        self.address = p.address
        self.tls = (
            GrpcClientTls(p.tls_ca, p.client_cert, p.client_key, p.tls_server_name)
            if (p.tls_ca or p.client_cert)
            else None
        )
        self._channel: grpc.aio.Channel | None = None
        self._retired: set[asyncio.Task[None]] = set()

    def _stub(self) -> pb_grpc.PolicyServiceStub:
        if self._channel is not None and self.tls is not None and self.tls.changed():
            # Renewed certificates: a new channel; calls in flight finish on the old.
            task = asyncio.create_task(self._channel.close(grace=TIMEOUT))
            self._retired.add(task)
            task.add_done_callback(self._retired.discard)
            self._channel = None
        if self._channel is None:
            if self.tls is None:
                self._channel = grpc.aio.insecure_channel(self.address)
            else:
                self._channel = grpc.aio.secure_channel(
                    self.address, self.tls.credentials(), options=self.tls.options()
                )
        return pb_grpc.PolicyServiceStub(self._channel)  # type: ignore[no-untyped-call]

    async def check(self, login: str, password: str, client_ip: str) -> LoginResult:
        request = pb.AuthenticateRequest(
            login=login, password=password, client_ip=client_ip, service="api"
        )
        try:
            answer = await self._stub().Authenticate(request, timeout=TIMEOUT)
        except grpc.aio.AioRpcError as exc:
            log.warning("policy cannot check a console login: %s", exc.code().name)
            return LoginResult("unavailable")
        if answer.result == pb.AUTH_RESULT_OK:
            role = console_role(list(answer.user.roles))
            if not role:
                return LoginResult("no-role", answer.user.login)
            return LoginResult("ok", answer.user.login, role, list(answer.user.addresses))
        if answer.result == pb.AUTH_RESULT_LOCKED:
            return LoginResult("locked", retry_after=int(answer.retry_after))
        if answer.result == pb.AUTH_RESULT_INVALID:
            return LoginResult("invalid")
        return LoginResult("unavailable")

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None
        for task in list(self._retired):
            await task
