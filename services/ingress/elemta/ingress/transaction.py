"""End of DATA: Received header, policy verdict, header edits, durable store, reply.

:meth:`MessageProcessor.process` takes a finished SMTP transaction and the
unstuffed message and returns the one reply the client reads. It never raises for
a failure of policy or JetStream: those become ``451 4.3.0`` replies.
"""

from __future__ import annotations

import logging
import re
import time
from contextlib import nullcontext
from dataclasses import dataclass, field

from opentelemetry import trace
from opentelemetry.context import Context

from elemta.common import logs
from elemta.common.config import Config
from elemta.common.envelope import Envelope, new_queue_id
from elemta.common.message import join_message, split_message
from elemta.common.networks import Networks
from elemta.common.priority import Priorities
from elemta.common.telemetry import tracer

from . import metrics
from .data import wire_ready
from .dsnparams import DsnRequest
from .handoff import Handoff, QueueUnavailable
from .policy_client import (
    ACCEPT,
    DISCARD,
    HOLD,
    REJECT,
    TEMPFAIL,
    Decision,
    PolicyClient,
    PolicyUnavailable,
    SessionInfo,
)
from .received import protocol_name, received_header
from .submission import complete_headers

__all__ = [
    "POLICY_FAILURE",
    "QUEUE_FAILURE",
    "MessageProcessor",
    "Transaction",
    "edit_headers",
]

log = logging.getLogger(__name__)

QUEUE_FAILURE = "451 4.3.0 Queue temporarily unavailable, try again later"
POLICY_FAILURE = "451 4.3.0 Temporary policy failure, try again later"

_FIELD_NAME = re.compile(rb"^([!-9;-~]+)[ \t]*:")


@dataclass
class Transaction:
    """One SMTP mail transaction as the end of DATA sees it."""

    helo: str
    client_ip: str
    client_port: int
    esmtp: bool
    tls: bool
    sender: str  # "" for the null sender
    recipients: list[str]
    smtputf8: bool = False
    body_8bit: bool = False
    data_ended: float = 0.0  # perf_counter at the end-of-data mark
    dsn: DsnRequest = field(default_factory=DsnRequest)
    authenticated_user: str = ""  # SMTP AUTH login: to policy only, never in headers
    submission: bool = False  # from a submission listener: Message-ID and Date completed
    client_name: str = "unknown"  # forward-confirmed reverse DNS name
    mt_priority: int | None = None  # MT-PRIORITY of MAIL FROM (RFC 6710), not yet judged


def edit_headers(message: bytes, add: list[tuple[str, str]], remove: list[str]) -> bytes:
    """Drop the header fields named in ``remove`` and prepend ``add`` (in order).

    An entry ``Name:prefix`` drops only the ``Name`` fields whose value starts with
    ``prefix`` (case-insensitive) — how forged ``Authentication-Results`` that claim
    our own authserv-id are removed while other servers' results stay.
    """
    if remove:
        rules: dict[bytes, list[bytes]] = {}
        for entry in remove:
            name, sep, prefix = entry.partition(":")
            key = name.strip().lower().encode("utf-8", "replace")
            rules.setdefault(key, []).append(prefix.strip().lower().encode() if sep else b"")
        kept: list[bytes] = []
        dropping = False
        pos = 0
        while True:
            eol = message.find(b"\r\n", pos)
            if eol <= pos:  # the empty line ending the header section, or no line end
                break
            line = message[pos:eol]
            if line[:1] in (b" ", b"\t"):  # a folded continuation of the field before
                if not dropping:
                    kept.append(line)
            else:
                m = _FIELD_NAME.match(line)
                if m is None:  # not a header field: the header section is over
                    break
                prefixes = rules.get(m.group(1).lower())
                value = line[m.end() :].lstrip(b": \t").lower()
                dropping = prefixes is not None and any(value.startswith(p) for p in prefixes)
                if not dropping:
                    kept.append(line)
            pos = eol + 2
        message = b"".join(line + b"\r\n" for line in kept) + message[pos:]
    if add:
        prefix = "".join(f"{name}: {value}\r\n" for name, value in add)
        message = prefix.encode("utf-8", "replace") + message
    return message


def apply_changes(
    decision: Decision, sender: str, recipients: list[str], received: bytes, content: bytes
) -> tuple[str, list[str], bytes]:
    """The envelope and message after policy's changes and header edits.

    Policy judged ``received + content``; a changed header section or body it
    returns replaces that part. Our ``Received:`` stays on top when policy kept
    it there, with the verdict's headers below it, as without changes.
    """
    if decision.changes is None and not decision.add_headers and not decision.remove_headers:
        return sender, recipients, received + content  # as it came: no copies to edit
    message = received + content
    c = decision.changes
    if c is not None:
        if c.sender is not None:
            sender = c.sender
        if c.delete_recipients:
            gone = {r.lower() for r in c.delete_recipients}
            recipients = [r for r in recipients if r.lower() not in gone]
        for rcpt in c.add_recipients:
            if rcpt.lower() not in (r.lower() for r in recipients):
                recipients = [*recipients, rcpt]
        if c.header is not None or c.body is not None:
            header, body = split_message(message)
            message = join_message(
                header if c.header is None else c.header, body if c.body is None else c.body
            )
    if message.startswith(received):
        rest = edit_headers(message[len(received) :], decision.add_headers, decision.remove_headers)
        return sender, recipients, received + rest
    return sender, recipients, edit_headers(message, decision.add_headers, decision.remove_headers)


class MessageProcessor:
    def __init__(self, cfg: Config, policy: PolicyClient, handoff: Handoff) -> None:
        self.hostname = cfg.server.hostname
        self.policy = policy
        self.handoff = handoff
        self._tracer = tracer("elemta.ingress")
        self.trusted = Networks(cfg.server.trusted_networks)
        self.priorities = Priorities(cfg.priorities)
        p = cfg.policy
        # What policy does with mail from the trusted networks is sign it (dkim_keys)
        # and run the plugins and milters; with none of them configured its verdict
        # is always a plain accept, and the gRPC round trip is only cost.
        self.trusted_needs_policy = cfg.ingress.trusted_policy == "always" or bool(
            p.dkim_keys or p.plugins or p.milters
        )

    def asks_policy(self, client_ip: str) -> bool:
        """Whether end of DATA asks policy (CheckData) about this client's message."""
        return self.trusted_needs_policy or client_ip not in self.trusted

    def precheck(self) -> str:
        """The reply refusing DATA right away when nothing could be stored, else ""."""
        why = self.handoff.unavailable()
        if why:
            log.warning("refusing DATA: %s", why)
            return QUEUE_FAILURE
        return ""

    async def process(self, tx: Transaction, content: bytes) -> str:
        """The reply to the end of DATA; never raises (short of cancellation)."""
        try:
            return await self._traced(tx, content)
        except Exception:
            log.exception("failed to handle a message from %s", tx.client_ip)
            metrics.count_message("tempfail")
            return "451 4.3.0 Error: internal error, try again later"

    async def _traced(self, tx: Transaction, content: bytes) -> str:
        started = tx.data_ended or time.perf_counter()
        queue_id = new_queue_id()
        token = logs.queue_id.set(queue_id)
        try:
            # The root span of the message's trace, whatever context is current.
            with self._tracer.start_as_current_span(
                "ingress.message",
                context=Context(),
                kind=trace.SpanKind.SERVER,
                attributes={
                    "elemta.queue_id": queue_id,
                    "elemta.size": len(content),
                    "elemta.recipients": len(tx.recipients),
                    "net.peer.ip": tx.client_ip,
                },
            ) as span:
                reply, result = await self._process(tx, content, queue_id, span)
                span.set_attribute("elemta.result", result)
                span.set_attribute("smtp.reply_code", int(reply[:3]))
                if result != "accepted":
                    span.set_status(trace.Status(trace.StatusCode.ERROR, reply))
        finally:
            logs.queue_id.reset(token)
        metrics.count_message(result)
        if result == "accepted":
            metrics.ACCEPT_SECONDS.observe(time.perf_counter() - started)
        return reply

    async def _process(
        self, tx: Transaction, content: bytes, queue_id: str, span: trace.Span
    ) -> tuple[str, str]:
        checked = content  # passed the DATA or BDAT checks: CRLF line ends only
        if tx.submission and tx.authenticated_user:
            content = complete_headers(content, self.hostname, queue_id)
        received = received_header(
            helo=tx.helo,
            client_ip=tx.client_ip,
            hostname=self.hostname,
            protocol=protocol_name(tx.esmtp, tx.tls, bool(tx.authenticated_user)),
            queue_id=queue_id,
            recipients=tx.recipients,
            client_name=tx.client_name,
        )
        session = SessionInfo(
            client_ip=tx.client_ip,
            client_port=tx.client_port,
            helo=tx.helo,
            tls=tx.tls,
            queue_id=queue_id,
            authenticated_user=tx.authenticated_user,
            client_hostname=tx.client_name,
        )
        try:
            if self.asks_policy(tx.client_ip):
                decision = await self.policy.check_data(
                    session, tx.sender, tx.recipients, received + content
                )
            else:
                decision = Decision(ACCEPT)
        except PolicyUnavailable as exc:
            log.warning("policy check failed: %s", exc)
            return self._refused(tx, POLICY_FAILURE, "tempfail")
        if decision.action == REJECT:
            return self._refused(tx, decision.reply, "rejected")
        if decision.action == TEMPFAIL:
            return self._refused(tx, decision.reply, "tempfail")
        if decision.action == DISCARD:
            log.info(
                "discard: from=<%s> nrcpt=%d: discarded by policy", tx.sender, len(tx.recipients)
            )
            return "250 2.0.0 Ok: discarded", "discarded"

        sender, recipients, message = apply_changes(
            decision, tx.sender, list(tx.recipients), received, content
        )
        if decision.changes is not None:
            log.info(
                "policy changed the message: from=<%s> nrcpt=%d%s%s",
                sender,
                len(recipients),
                " header" if decision.changes.header is not None else "",
                " body" if decision.changes.body is not None else "",
            )
        if not recipients:
            log.info("discard: from=<%s>: policy removed every recipient", sender)
            return "250 2.0.0 Ok: discarded", "discarded"
        env = Envelope(
            id=queue_id,
            sender=sender,
            recipients=recipients,
            received_at=time.time(),
            client_ip=tx.client_ip,
            client_helo=tx.helo,
            size=len(message),
            hold=decision.action == HOLD,
            smtputf8=tx.smtputf8,
            body_8bit=tx.body_8bit,
            dsn_ret=tx.dsn.ret,
            dsn_envid=tx.dsn.envid,
            dsn_notify={r: n for r, n in tx.dsn.notify.items() if r in recipients},
            dsn_orcpt={r: o for r, o in tx.dsn.orcpt.items() if r in recipients},
            wire_ready=wire_ready(message, checked),
        )
        if self.priorities.enabled:
            env.priority = self.priorities.assign(
                sender,
                recipients,
                tx.authenticated_user,
                tx.mt_priority,
                honoured=bool(tx.authenticated_user) or tx.client_ip in self.trusted,
            )
        # A message whose trace is not sampled (no exporter, or not chosen) gets
        # no child span: it would record nothing either.
        store = (
            self._tracer.start_as_current_span(
                "ingress.store",
                kind=trace.SpanKind.PRODUCER,
                attributes={"elemta.queue_id": queue_id, "elemta.size": len(message)},
            )
            if span.is_recording()
            else nullcontext(trace.INVALID_SPAN)
        )
        with store as store_span:
            try:
                seq = await self.handoff.store(env, message, ctx=trace.set_span_in_context(span))
            except QueueUnavailable as exc:
                store_span.set_status(trace.Status(trace.StatusCode.ERROR, str(exc)))
                log.warning("store failed: %s", exc)
                return self._refused(tx, QUEUE_FAILURE, "tempfail")
            store_span.set_attribute("messaging.nats.sequence", seq)
        metrics.MESSAGE_BYTES.observe(len(message))
        size = len(message)
        logs.info(
            log,
            f"from=<{sender}> size={size} nrcpt={len(recipients)} client={tx.helo}"
            f"[{tx.client_ip}]{' (hold)' if env.hold else ''} queued as {queue_id}",
            sender=sender,
            size=size,
            nrcpt=len(recipients),
            client_ip=tx.client_ip,
            hold=env.hold,
            body_object=env.body_object,
        )
        return f"250 2.0.0 Ok: queued as {queue_id}", "accepted"

    def _refused(self, tx: Transaction, reply: str, result: str) -> tuple[str, str]:
        log.info(
            "reject: DATA from %s[%s]: %s; from=<%s> nrcpt=%d",
            tx.helo,
            tx.client_ip,
            reply,
            tx.sender,
            len(tx.recipients),
            extra={"reply": reply, "client_ip": tx.client_ip, "sender": tx.sender},
        )
        return reply, result
