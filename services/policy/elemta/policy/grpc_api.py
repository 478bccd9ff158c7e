"""The gRPC edge: protobuf in, domain objects to the pipeline, protobuf out.

Generated types stop here; the pipeline sees plain strings and dataclasses.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import grpc
from opentelemetry import trace
from prometheus_client import Counter, Histogram

from elemta.common import telemetry
from elemta.rpc.policy.v1 import policy_pb2 as pb
from elemta.rpc.policy.v1 import policy_pb2_grpc as pb_grpc

from .checks import ACCEPT, HOLD, Changes, Pipeline, Verdict
from .credentials.authenticator import Authenticator, AuthResult

__all__ = ["PolicyServicer"]

_ACTIONS = {
    "accept": pb.ACTION_ACCEPT,
    "reject": pb.ACTION_REJECT,
    "tempfail": pb.ACTION_TEMPFAIL,
    "hold": pb.ACTION_HOLD,
    "discard": pb.ACTION_DISCARD,
}

CHECKS = Counter("elemta_policy_checks_total", "Policy checks answered", ["stage", "action"])
LATENCY = Histogram(
    "elemta_policy_check_seconds",
    "Time to answer a policy check",
    ["stage"],
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5),
)

_tracer = trace.get_tracer("elemta.policy")

_AUTH_RESULTS = {
    AuthResult.OK: pb.AUTH_RESULT_OK,
    AuthResult.INVALID: pb.AUTH_RESULT_INVALID,
    AuthResult.LOCKED: pb.AUTH_RESULT_LOCKED,
    AuthResult.UNAVAILABLE: pb.AUTH_RESULT_UNAVAILABLE,
}
LOGINS = Counter("elemta_policy_logins_total", "Logins checked", ["service", "result"])


def _to_pb(v: Verdict) -> pb.Verdict:
    return pb.Verdict(
        action=_ACTIONS[v.action],
        smtp_code=v.code,
        enhanced_code=v.enhanced,
        reason=v.reason,
        add_headers=[pb.Header(name=n, value=val) for n, val in v.add_headers],
        remove_headers=list(v.remove_headers),
    )


def _changes_to_pb(c: Changes | None) -> pb.MessageChanges | None:
    if c is None:
        return None
    out = pb.MessageChanges(
        add_recipients=list(c.add_recipients), delete_recipients=list(c.delete_recipients)
    )
    if c.sender is not None:
        out.sender = c.sender
    if c.header is not None:
        out.header = c.header
    if c.body is not None:
        out.body = c.body
    return out


# What a CheckData verdict leaves in the message's history: (queue id, verdict).
Recorder = Callable[[str, Verdict], Awaitable[None]]


def _session(s: pb.Session) -> dict[str, object]:
    return {
        "client_ip": s.client_ip,
        "client_port": s.client_port,
        "client_hostname": s.client_hostname,
        "helo": s.helo,
        "tls": s.tls,
        "user": s.authenticated_user,
        "queue_id": s.queue_id,
    }


class PolicyServicer(pb_grpc.PolicyServiceServicer):
    def __init__(
        self,
        pipeline: Pipeline,
        record: Recorder | None = None,
        authenticator: Authenticator | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.record = record
        self.authenticator = authenticator

    async def Authenticate(
        self, request: pb.AuthenticateRequest, context: grpc.aio.ServicerContext
    ) -> pb.AuthenticateResponse:  # noqa: N802
        service = request.service if request.service in ("smtp", "api") else "other"
        if self.authenticator is None:
            LOGINS.labels(service, "unavailable").inc()
            return pb.AuthenticateResponse(result=pb.AUTH_RESULT_UNAVAILABLE)
        out = await self.authenticator.authenticate(
            request.login, request.password, request.client_ip, request.service
        )
        LOGINS.labels(service, out.result.value).inc()
        user = None
        if out.user is not None:
            user = pb.User(
                login=out.user.login, roles=list(out.user.roles), addresses=list(out.user.addresses)
            )
        return pb.AuthenticateResponse(
            result=_AUTH_RESULTS[out.result],
            user=user,
            failures=out.failures,
            retry_after=out.retry_after,
        )

    async def _judge(
        self, stage: str, context: grpc.aio.ServicerContext, **kwargs: object
    ) -> pb.Verdict:
        return _to_pb(await self._verdict(stage, context, **kwargs))

    async def _verdict(
        self, stage: str, context: grpc.aio.ServicerContext, **kwargs: object
    ) -> Verdict:
        ctx = telemetry.context_from_metadata(context.invocation_metadata())
        started = time.perf_counter()
        with _tracer.start_as_current_span(f"policy.{stage}", context=ctx) as span:
            verdict = await self.pipeline.run(stage, **kwargs)
            span.set_attribute("elemta.policy.action", verdict.action)
        CHECKS.labels(stage, verdict.action).inc()
        LATENCY.labels(stage).observe(time.perf_counter() - started)
        return verdict

    async def CheckConnect(
        self, request: pb.CheckConnectRequest, context: grpc.aio.ServicerContext
    ) -> pb.CheckConnectResponse:  # noqa: N802
        v = await self._judge("connect", context, session=_session(request.session))
        return pb.CheckConnectResponse(verdict=v)

    async def CheckMail(
        self, request: pb.CheckMailRequest, context: grpc.aio.ServicerContext
    ) -> pb.CheckMailResponse:  # noqa: N802
        v = await self._judge(
            "mail", context, session=_session(request.session), sender=request.sender
        )
        return pb.CheckMailResponse(verdict=v)

    async def CheckRcpt(
        self, request: pb.CheckRcptRequest, context: grpc.aio.ServicerContext
    ) -> pb.CheckRcptResponse:  # noqa: N802
        v = await self._judge(
            "rcpt",
            context,
            session=_session(request.session),
            sender=request.sender,
            recipient=request.recipient,
        )
        return pb.CheckRcptResponse(verdict=v)

    async def CheckData(
        self, request: pb.CheckDataRequest, context: grpc.aio.ServicerContext
    ) -> pb.CheckDataResponse:  # noqa: N802
        verdict = await self._verdict(
            "data",
            context,
            session=_session(request.session),
            sender=request.sender,
            recipients=list(request.recipients),
            message=request.message,
        )
        if verdict.notes and self.record is not None and request.session.queue_id:
            await self.record(request.session.queue_id, verdict)
        changes = verdict.changes if verdict.action in (ACCEPT, HOLD) else None
        return pb.CheckDataResponse(verdict=_to_pb(verdict), changes=_changes_to_pb(changes))
