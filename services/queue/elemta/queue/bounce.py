"""Delivery status notifications (RFC 3464): failures, and the notices of RFC 3461.

Every notice is built here: failures (``Action: failed``), and, for senders who
asked through the DSN extension (see :mod:`.notices` for when), delay warnings
(``delayed``) and success notices (``delivered``, or ``relayed`` when the next
hop does not speak DSN). Each carries the sender's ``ENVID``
(``Original-Envelope-Id``) and each recipient's ``ORCPT``
(``Original-Recipient``).

A bounce is an ordinary message to the original sender: it is stored in
ELEMTA_MESSAGES with the null sender and ``is_bounce`` in its envelope, and the
intake routes it like any other mail. Its ``Nats-Msg-Id`` is
``bounce.<original id>.<n>`` with ``n`` counted in the message's state, so a
redelivered outcome or a restarted scheduler cannot send the same DSN twice.

A bounce never bounces (RFC 5321 section 6.1 / 4.5.5): when a message with the null
sender fails, the failure is logged and recorded as a ``failed`` event, and the
message is dropped.

Only the headers of the original message are returned (``text/rfc822-headers``):
enough for the sender to recognise it, never the whole body back to a possibly
forged sender — unless the sender asked for the whole message with ``RET=FULL``,
and then only in a failure notice (``message/rfc822``, up to
:data:`MAX_RETURNED_MESSAGE`; larger messages return their headers).
"""

from __future__ import annotations

import email
import email.charset
import logging
import time
from dataclasses import dataclass
from email.message import Message
from email.mime.base import MIMEBase
from email.mime.multipart import MIMEMultipart
from email.policy import SMTP
from email.utils import formatdate, make_msgid

from nats.js import JetStreamContext
from nats.js.object_store import ObjectStore

from elemta.common.config import Config
from elemta.common.envelope import Envelope, RecipientResult, new_queue_id
from elemta.common.jetstream import ENVELOPE_HEADER, MESSAGES_STREAM, MSG_SUBJECT
from elemta.common.replies import Reply
from elemta.common.telemetry import headers_with_context, tracer
from elemta.common.xtext import xtext_decode

from .events import EventPublisher
from .metrics import BOUNCES
from .state import MessageState

__all__ = [
    "Bouncer",
    "Failure",
    "build_dsn",
    "failure_from_result",
    "original_headers",
]

log = logging.getLogger(__name__)

MAX_RETURNED_HEADERS = 64 * 1024
MAX_RETURNED_MESSAGE = 10 * 1024 * 1024
# Notice kind -> (Subject, what the text says happened).
_KINDS = {
    "failed": (
        "Undelivered Mail Returned to Sender",
        "I'm sorry to have to inform you that your message could not\n"
        "be delivered to one or more recipients.",
    ),
    "delayed": (
        "Delayed Mail (still being retried)",
        "Your message could not be delivered yet to one or more recipients.\n"
        "It will be retried until it is too old; you need not send it again.",
    ),
    "delivered": (
        "Successful Mail Delivery Report",
        "Your message was successfully delivered to the destination(s)\nlisted below.",
    ),
}
_QP_UTF8 = email.charset.Charset("utf-8")
_QP_UTF8.body_encoding = email.charset.QP


@dataclass
class Failure:
    """One recipient given up on, as it will appear in the DSN."""

    recipient: str
    status: str  # RFC 3463 code: "5.1.1", or "4.4.7" when the lifetime ran out
    code: int = 0
    text: str = ""
    host: str = ""
    expired: bool = False
    enhanced: str = ""  # of the last reply (``status`` is the DSN's verdict)
    action: str = "failed"  # RFC 3464 Action: failed, delayed, delivered or relayed
    orcpt: str = ""  # the sender's ORCPT for this recipient ("rfc822;<xtext>")


def _typed(value: str) -> str:
    """``rfc822;a+2Bb@x`` as a notice shows it: ``rfc822; a+b@x``."""
    addr_type, _, address = value.partition(";")
    return f"{addr_type}; {xtext_decode(address)}"


def failure_from_result(result: RecipientResult, host: str, expired: bool = False) -> Failure:
    """The DSN entry: ``Status: 4.4.7`` when the lifetime ran out, else the
    permanent enhanced code of the last reply (``5.0.0`` when it had none)."""
    if expired:
        status = "4.4.7"
    else:
        status = result.enhanced if result.enhanced[:1] == "5" else "5.0.0"
    return Failure(
        result.recipient, status, result.code, result.text, host, expired, result.enhanced
    )


def _diagnostic(f: Failure) -> str:
    """The last reply as the DSN's Diagnostic-Code shows it: ``550 5.1.1 text``."""
    text = " ".join(f.text.split())
    if f.code and f.enhanced and not text.startswith(f.enhanced):
        return str(Reply(f.code, f.enhanced, text)).strip()
    if f.code:
        return f"{f.code} {text}".strip()
    return text


def _text_part(subtype: str, text: str) -> MIMEBase:
    """A text part without MIME-Version; 7bit when ASCII, quoted-printable otherwise."""
    part = MIMEBase("text", subtype, policy=SMTP)
    del part["MIME-Version"]
    if text.isascii():
        part.set_payload(text)
        part["Content-Transfer-Encoding"] = "7bit"
    else:
        part.set_payload(text, charset=_QP_UTF8)
    return part


def _human_text(hostname: str, failures: list[Failure], kind: str = "failed") -> str:
    lines = [
        f"This is the mail system at host {hostname}.",
        "",
        *_KINDS[kind][1].split("\n"),
        "",
        "For further assistance, please send mail to postmaster.",
        "",
        "                   The mail system",
        "",
    ]
    for f in failures:
        if f.action in ("delivered", "relayed"):
            where = f" via {f.host}" if f.host and f.host not in ("maildir", "local") else ""
            lines.append(f"<{f.recipient}>: {f.action}{where}: {_diagnostic(f)}".rstrip(": "))
            continue
        if f.action == "delayed":
            reason = f"delayed; last error: {_diagnostic(f) or 'none reported'}"
        elif f.expired:
            reason = "delivery time expired"
            if f.code or f.text:
                reason += f"; last error: {_diagnostic(f)}"
        elif f.host:
            reason = f"host {f.host} said: {_diagnostic(f)}"
        else:
            reason = _diagnostic(f) or "delivery failed"
        lines.append(f"<{f.recipient}>: {reason}")
    return "\n".join(lines) + "\n"


def build_dsn(
    *,
    hostname: str,
    to: str,
    original_id: str,
    received_at: float,
    failures: list[Failure],
    headers: bytes | None,
    now: float | None = None,
    kind: str = "failed",
    envid: str = "",
    message: bytes | None = None,
) -> bytes:
    """The complete DSN message, CRLF line endings, ready to store.

    ``kind`` is ``failed``, ``delayed`` or ``delivered`` (success, the entries'
    own ``action`` saying delivered or relayed); ``envid`` the sender's ENVID
    (xtext); ``message``, when given, is returned whole instead of ``headers``.
    """
    now = time.time() if now is None else now
    outer = MIMEMultipart("report", report_type="delivery-status", policy=SMTP)
    outer["From"] = f"Mail Delivery System <MAILER-DAEMON@{hostname}>"
    outer["To"] = to
    outer["Subject"] = _KINDS[kind][0]
    outer["Date"] = formatdate(now, usegmt=True)
    outer["Message-ID"] = make_msgid(domain=hostname)
    outer["Auto-Submitted"] = "auto-replied"
    outer.preamble = "This is a MIME-encapsulated message."

    outer.attach(_text_part("plain", _human_text(hostname, failures, kind)))

    report = MIMEBase("message", "delivery-status", policy=SMTP)
    del report["MIME-Version"]
    per_message = Message(policy=SMTP)
    if envid:
        per_message["Original-Envelope-Id"] = xtext_decode(envid)
    per_message["Reporting-MTA"] = f"dns; {hostname}"
    per_message["X-Elemta-Queue-ID"] = original_id
    per_message["Arrival-Date"] = formatdate(received_at, usegmt=True)
    report.attach(per_message)
    for f in failures:
        block = Message(policy=SMTP)
        if f.orcpt:
            block["Original-Recipient"] = _typed(f.orcpt)
        block["Final-Recipient"] = f"rfc822; {f.recipient}"
        block["Action"] = f.action
        block["Status"] = f.status
        if f.host and f.host not in ("maildir", "local"):
            block["Remote-MTA"] = f"dns; {f.host}"
        diag = _diagnostic(f)
        if diag:
            block["Diagnostic-Code"] = f"smtp; {diag}"
        block["Last-Attempt-Date"] = formatdate(now, usegmt=True)
        report.attach(block)
    outer.attach(report)

    if message is not None:
        returned = MIMEBase("message", "rfc822", policy=SMTP)
        del returned["MIME-Version"]
        returned.set_payload([email.message_from_bytes(message, policy=SMTP)])
        outer.attach(returned)
    elif headers:
        outer.attach(_text_part("rfc822-headers", headers.decode("utf-8", errors="replace")))
    return outer.as_bytes(policy=SMTP)


def original_headers(message: bytes) -> bytes:
    """The header section of a stored message (without the blank line), capped in size."""
    end = message.find(b"\r\n\r\n")
    if end < 0:
        end = message.find(b"\n\n")
    head = message if end < 0 else message[: end + 2]
    if len(head) > MAX_RETURNED_HEADERS:
        cut = head.rfind(b"\n", 0, MAX_RETURNED_HEADERS)
        head = head[: cut + 1 if cut > 0 else MAX_RETURNED_HEADERS]
    return head


class Bouncer:
    def __init__(
        self,
        cfg: Config,
        js: JetStreamContext,
        objects: ObjectStore | None,
        events: EventPublisher,
    ) -> None:
        self.cfg = cfg
        self.js = js
        self.objects = objects
        self.events = events
        self.tracer = tracer(__name__)

    async def _original(self, st: MessageState) -> bytes | None:
        try:
            raw = await self.js.get_msg(MESSAGES_STREAM, st.msg_seq, direct=True)
            data = raw.data or b""
            if not data and st.body_object and self.objects is not None:
                obj = await self.objects.get(st.body_object)
                data = obj.data or b""
        except Exception as exc:  # the DSN is still worth sending without them
            log.warning("cannot read original message %s: %s", st.id, exc)
            return None
        return data or None

    async def bounce(self, st: MessageState, failures: list[Failure], kind: str = "failed") -> str:
        """Send one notice of ``kind`` about ``failures``; its queue id ("" when none was sent).

        ``kind`` is ``failed`` (the default: a bounce), ``delayed`` or
        ``delivered``. Increments ``st.bounces``; the caller saves the state
        afterwards.
        """
        if not failures:
            return ""
        if st.is_bounce or not st.sender:
            if kind != "failed":
                return ""
            log.warning(
                "undeliverable bounce dropped",
                extra={"recipients": [f.recipient for f in failures]},
            )
            for f in failures:
                await self.events.emit(
                    st.id,
                    "failed",
                    recipient=f.recipient,
                    status=f.status,
                    reason="bounce not deliverable; never bounced",
                    code=f.code,
                    text=f.text,
                )
            return ""
        for f in failures:
            f.orcpt = f.orcpt or st.dsn_orcpt.get(f.recipient, "")
        with self.tracer.start_as_current_span("queue.bounce") as span:
            original = await self._original(st)
            full = (
                kind == "failed"
                and st.dsn_ret == "FULL"
                and original is not None
                and len(original) <= MAX_RETURNED_MESSAGE
            )
            st.bounces += 1
            bounce_id = new_queue_id()
            data = build_dsn(
                hostname=self.cfg.server.hostname,
                to=st.sender,
                original_id=st.id,
                received_at=st.received_at,
                failures=failures,
                headers=(original_headers(original) or None) if original else None,
                kind=kind,
                envid=st.dsn_envid,
                message=original if full else None,
            )
            env = Envelope(
                id=bounce_id,
                sender="",
                recipients=[st.sender],
                received_at=time.time(),
                size=len(data),
                is_bounce=True,
                smtputf8=not st.sender.isascii(),
            )
            hdrs = headers_with_context(
                {ENVELOPE_HEADER: env.to_header(), "Nats-Msg-Id": f"bounce.{st.id}.{st.bounces}"}
            )
            ack = await self.js.publish(f"{MSG_SUBJECT}.{bounce_id}", data, headers=hdrs)
            span.set_attribute("elemta.bounce_id", bounce_id)
            span.set_attribute("elemta.notice", kind)
            if ack.duplicate:
                log.info("notice %d already sent", st.bounces)
                return ""
        if kind == "failed":
            BOUNCES.inc()
        what = {"failed": "non-delivery", "delayed": "delay", "delivered": "success"}[kind]
        log.info(
            "sender %s notification %s",
            what,
            bounce_id,
            extra={"recipients": [f.recipient for f in failures], "notice": kind},
        )
        return bounce_id
