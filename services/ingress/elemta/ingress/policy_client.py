"""The gRPC client of the policy service and the mapping of its verdicts to replies.

One ``grpc.aio`` channel is shared by every session of the process. Each call
carries the trace context in its metadata and has a deadline of
``ingress.policy_timeout``; a policy service that cannot be reached or does not
answer in time raises :class:`PolicyUnavailable`, which ingress turns into
``451 4.3.0``. Only CheckData is called today; CheckConnect, CheckMail and
CheckRcpt are wired so that the SMTP stages can ask them later.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass, field, replace
from typing import Any

import grpc
from opentelemetry import trace

from elemta.common.replies import Reply, TemporaryError
from elemta.common.telemetry import metadata_with_context, tracer
from elemta.common.tlsfiles import GrpcClientTls
from elemta.rpc.policy.v1 import policy_pb2 as pb
from elemta.rpc.policy.v1 import policy_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

__all__ = [
    "ACCEPT",
    "DISCARD",
    "Decision",
    "EnvelopeChanges",
    "HOLD",
    "PolicyClient",
    "PolicyUnavailable",
    "REJECT",
    "SessionInfo",
    "TEMPFAIL",
    "decision_from_verdict",
]

ACCEPT, REJECT, TEMPFAIL, HOLD, DISCARD = "accept", "reject", "tempfail", "hold", "discard"

_ACTIONS = {
    pb.ACTION_ACCEPT: ACCEPT,
    pb.ACTION_REJECT: REJECT,
    pb.ACTION_TEMPFAIL: TEMPFAIL,
    pb.ACTION_HOLD: HOLD,
    pb.ACTION_DISCARD: DISCARD,
}
_ENHANCED = re.compile(r"^[245]\.\d{1,3}\.\d{1,3}$")
_HEADER_NAME = re.compile(r"^[!-9;-~]{1,76}$")

POLICY_FAILURE = "451 4.3.0 Temporary policy failure, try again later"


class PolicyUnavailable(TemporaryError):
    """The policy service could not be asked or did not answer in time (451 4.3.0)."""


@dataclass(frozen=True)
class SessionInfo:
    """What policy learns about the SMTP session."""

    client_ip: str
    client_port: int
    helo: str
    tls: bool
    queue_id: str = ""
    client_hostname: str = ""
    authenticated_user: str = ""

    def to_pb(self) -> pb.Session:
        return pb.Session(
            client_ip=self.client_ip,
            client_port=self.client_port,
            client_hostname=self.client_hostname,
            helo=self.helo,
            tls=self.tls,
            authenticated_user=self.authenticated_user,
            queue_id=self.queue_id,
        )


@dataclass(frozen=True)
class EnvelopeChanges:
    """What policy changed (milters): the sender, recipients, header section, body."""

    sender: str | None = None
    add_recipients: list[str] = field(default_factory=list)
    delete_recipients: list[str] = field(default_factory=list)
    header: bytes | None = None
    body: bytes | None = None


_ADDRESS = re.compile(r"^[^\s<>\x00-\x1f\x7f]*$")


def _address(text: str) -> str | None:
    """An address from policy without angle brackets; None if it cannot be one."""
    text = text.strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1]
    return text if len(text) <= 320 and _ADDRESS.match(text) else None


def changes_from_pb(c: pb.MessageChanges) -> EnvelopeChanges | None:
    sender = _address(c.sender) if c.HasField("sender") else None
    added = [a for a in map(_address, c.add_recipients) if a]
    deleted = [a for a in map(_address, c.delete_recipients) if a]
    header = c.header if c.HasField("header") else None
    body = c.body if c.HasField("body") else None
    if sender is None and not added and not deleted and header is None and body is None:
        return None
    return EnvelopeChanges(sender, added, deleted, header, body)


@dataclass(frozen=True)
class Decision:
    """A verdict made ready for SMTP: the action and, for refusals, the reply."""

    action: str
    reply: str = ""
    add_headers: list[tuple[str, str]] = field(default_factory=list)
    remove_headers: list[str] = field(default_factory=list)
    changes: EnvelopeChanges | None = None


def _one_line(text: str) -> str:
    """A reason from policy made one reply line: printable ASCII (RFC 5321 section 4.2).

    Policy may quote client text (an address, a HELO name); anything else is ``?``.
    """
    words = "".join(c if c.isprintable() else " " for c in text).split()
    return "".join(c if c.isascii() else "?" for c in " ".join(words))[:400]


def _header_value(text: str) -> str:
    """A header value from policy, its folding kept (DKIM-Signature and
    Authentication-Results are long) and anything unprintable blanked out."""
    segments = [_clean(seg) for seg in text.replace("\r\n", "\n").split("\n")]
    return "\r\n\t".join(seg for seg in segments if seg)[:16384]


def _clean(segment: str) -> str:
    return " ".join("".join(c if c.isprintable() else " " for c in segment).split())


def _reply(v: pb.Verdict, klass: str, code: int, enhanced: str, reason: str) -> str:
    """Reply text for a refusal, forcing the code into the class of the action."""
    low = int(klass) * 100
    smtp_code = v.smtp_code if low <= v.smtp_code < low + 100 else code
    ext = v.enhanced_code if _ENHANCED.match(v.enhanced_code) else enhanced
    if ext[0] != str(smtp_code)[0]:
        ext = str(smtp_code)[0] + ext[1:]
    return str(Reply(smtp_code, ext, _one_line(v.reason) or reason))


def decision_from_verdict(v: pb.Verdict) -> Decision:
    action = _ACTIONS.get(v.action)
    adds = [
        (h.name, _header_value(h.value)) for h in v.add_headers if _HEADER_NAME.match(h.name or "")
    ]
    removes = [n.strip().lower() for n in v.remove_headers if n.strip()]
    if action == REJECT:
        return Decision(REJECT, _reply(v, "5", 550, "5.7.1", "Message rejected"), adds, removes)
    if action == TEMPFAIL:
        reply = _reply(v, "4", 451, "4.7.1", "Message temporarily deferred, try again later")
        return Decision(TEMPFAIL, reply, adds, removes)
    if action in (ACCEPT, HOLD, DISCARD):
        return Decision(action, "", adds, removes)
    # An unknown or unspecified action: refuse for now rather than guess.
    return Decision(TEMPFAIL, POLICY_FAILURE)


class PolicyClient:
    """The ingress side of ``PolicyService``; over TLS (and mTLS) when ``tls`` is given.

    With TLS, a renewed certificate or CA (the files changed) opens a new channel
    for the next calls; calls in flight finish on the old one.
    """

    def __init__(
        self,
        address: str,
        timeout: float,
        max_message_size: int,
        tls: GrpcClientTls | None = None,
    ) -> None:
        self.address = address
        self.timeout = timeout
        self.max_message = max_message_size + 1024 * 1024
        self.tls = tls
        self._channel: grpc.aio.Channel | None = None
        self._stub: pb_grpc.PolicyServiceStub | None = None
        self._retired: set[asyncio.Task[None]] = set()
        self._tracer = tracer("elemta.ingress")

    def _new_channel(self) -> grpc.aio.Channel:
        options: list[tuple[str, Any]] = [
            ("grpc.max_send_message_length", self.max_message),
            # a policy answer may carry a replaced body (a milter's)
            ("grpc.max_receive_message_length", self.max_message),
            ("grpc.initial_reconnect_backoff_ms", 200),
            ("grpc.min_reconnect_backoff_ms", 200),
            ("grpc.max_reconnect_backoff_ms", 2000),
            ("grpc.keepalive_time_ms", 30000),
        ]
        if self.tls is None:
            return grpc.aio.insecure_channel(self.address, options=options)
        return grpc.aio.secure_channel(
            self.address, self.tls.credentials(), options=options + self.tls.options()
        )

    async def open(self) -> None:
        """Create the channel; it connects lazily and reconnects on its own."""
        self._channel = self._new_channel()
        self._stub = pb_grpc.PolicyServiceStub(self._channel)  # type: ignore[no-untyped-call]

    def _renew_channel(self) -> None:
        old = self._channel
        try:
            self._channel = self._new_channel()
        except OSError as exc:  # a file replaced half-way: try again at the next check
            log.warning("policy TLS files changed but cannot be read yet: %s", exc)
            return
        self._stub = pb_grpc.PolicyServiceStub(self._channel)  # type: ignore[no-untyped-call]
        log.info("policy TLS files changed; new channel to %s", self.address)
        if old is not None:
            task = asyncio.create_task(old.close(grace=self.timeout))
            self._retired.add(task)
            task.add_done_callback(self._retired.discard)

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None
            self._stub = None
        for task in list(self._retired):
            await task

    async def _call(self, method: str, request: object) -> Decision:
        response = await self._ask(method, request)
        return decision_from_verdict(response.verdict)

    async def _ask(self, method: str, request: object) -> Any:
        if self._stub is None:
            raise PolicyUnavailable("policy channel is not open")
        if self.tls is not None and self.tls.changed():
            self._renew_channel()
        try:
            response = await getattr(self._stub, method)(
                request, timeout=self.timeout, metadata=metadata_with_context()
            )
        except grpc.aio.AioRpcError as exc:
            raise PolicyUnavailable(f"{exc.code().name}: {exc.details()}") from None
        except grpc.RpcError as exc:  # pragma: no cover - aio raises AioRpcError
            raise PolicyUnavailable(str(exc)) from None
        return response

    async def authenticate(
        self, login: str, password: str, client_ip: str
    ) -> pb.AuthenticateResponse:
        """Check a login (SMTP AUTH); :class:`PolicyUnavailable` when policy cannot say.
        The generated response goes no further than :mod:`.smtpauth`."""
        request = pb.AuthenticateRequest(
            login=login, password=password, client_ip=client_ip, service="smtp"
        )
        return await self._ask("Authenticate", request)  # type: ignore[no-any-return]

    async def check_connect(self, session: SessionInfo) -> Decision:
        return await self._call("CheckConnect", pb.CheckConnectRequest(session=session.to_pb()))

    async def check_mail(
        self, session: SessionInfo, sender: str, parameters: list[str] | None = None
    ) -> Decision:
        request = pb.CheckMailRequest(
            session=session.to_pb(), sender=sender, parameters=parameters or []
        )
        return await self._call("CheckMail", request)

    async def check_rcpt(
        self,
        session: SessionInfo,
        sender: str,
        recipient: str,
        parameters: list[str] | None = None,
    ) -> Decision:
        request = pb.CheckRcptRequest(
            session=session.to_pb(),
            sender=sender,
            recipient=recipient,
            parameters=parameters or [],
        )
        return await self._call("CheckRcpt", request)

    async def check_data(
        self, session: SessionInfo, sender: str, recipients: list[str], message: bytes
    ) -> Decision:
        """Ask about a whole message (``message``: CRLF line endings, as it will be stored)."""
        with self._tracer.start_as_current_span(
            "policy.check_data",
            kind=trace.SpanKind.CLIENT,
            attributes={
                "rpc.system": "grpc",
                "rpc.service": "elemta.policy.v1.PolicyService",
                "rpc.method": "CheckData",
                "elemta.queue_id": session.queue_id,
            },
        ) as span:
            request = pb.CheckDataRequest(
                session=session.to_pb(), sender=sender, recipients=recipients, message=message
            )
            try:
                response = await self._ask("CheckData", request)
            except PolicyUnavailable as exc:
                span.set_status(trace.Status(trace.StatusCode.ERROR, str(exc)))
                raise
            decision = decision_from_verdict(response.verdict)
            if decision.action in (ACCEPT, HOLD) and response.HasField("changes"):
                changes = changes_from_pb(response.changes)
                if changes is not None:
                    decision = replace(decision, changes=changes)
            span.set_attribute("elemta.policy.action", decision.action)
            return decision
