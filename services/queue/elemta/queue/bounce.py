"""Delivery status notifications (RFC 3464) for recipients that cannot be delivered.

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
forged sender.
"""

from __future__ import annotations

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

from .events import EventPublisher
from .metrics import BOUNCES
from .state import MessageState

__all__ = ["Bouncer", "Failure", "build_dsn", "failure_from_result", "original_headers"]

log = logging.getLogger(__name__)

MAX_RETURNED_HEADERS = 64 * 1024
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


def _human_text(hostname: str, failures: list[Failure]) -> str:
    lines = [
        f"This is the mail system at host {hostname}.",
        "",
        "I'm sorry to have to inform you that your message could not",
        "be delivered to one or more recipients. Its headers are attached below.",
        "",
        "For further assistance, please send mail to postmaster.",
        "",
        "                   The mail system",
        "",
    ]
    for f in failures:
        if f.expired:
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
) -> bytes:
    """The complete DSN message, CRLF line endings, ready to store."""
    now = time.time() if now is None else now
    outer = MIMEMultipart("report", report_type="delivery-status", policy=SMTP)
    outer["From"] = f"Mail Delivery System <MAILER-DAEMON@{hostname}>"
    outer["To"] = to
    outer["Subject"] = "Undelivered Mail Returned to Sender"
    outer["Date"] = formatdate(now, usegmt=True)
    outer["Message-ID"] = make_msgid(domain=hostname)
    outer["Auto-Submitted"] = "auto-replied"
    outer.preamble = "This is a MIME-encapsulated message."

    outer.attach(_text_part("plain", _human_text(hostname, failures)))

    report = MIMEBase("message", "delivery-status", policy=SMTP)
    del report["MIME-Version"]
    per_message = Message(policy=SMTP)
    per_message["Reporting-MTA"] = f"dns; {hostname}"
    per_message["X-Elemta-Queue-ID"] = original_id
    per_message["Arrival-Date"] = formatdate(received_at, usegmt=True)
    report.attach(per_message)
    for f in failures:
        block = Message(policy=SMTP)
        block["Final-Recipient"] = f"rfc822; {f.recipient}"
        block["Action"] = "failed"
        block["Status"] = f.status
        if f.host and f.host not in ("maildir", "local"):
            block["Remote-MTA"] = f"dns; {f.host}"
        diag = _diagnostic(f)
        if diag:
            block["Diagnostic-Code"] = f"smtp; {diag}"
        block["Last-Attempt-Date"] = formatdate(now, usegmt=True)
        report.attach(block)
    outer.attach(report)

    if headers:
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

    async def _headers(self, st: MessageState) -> bytes | None:
        try:
            raw = await self.js.get_msg(MESSAGES_STREAM, st.msg_seq, direct=True)
            data = raw.data or b""
            if not data and st.body_object and self.objects is not None:
                obj = await self.objects.get(st.body_object)
                data = obj.data or b""
        except Exception as exc:  # the DSN is still worth sending without them
            log.warning("cannot read original message %s: %s", st.id, exc)
            return None
        return original_headers(data) or None

    async def bounce(self, st: MessageState, failures: list[Failure]) -> str:
        """Send one DSN for ``failures``; returns its queue id ("" when none was sent).

        Increments ``st.bounces``; the caller saves the state afterwards.
        """
        if not failures:
            return ""
        if st.is_bounce or not st.sender:
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
        with self.tracer.start_as_current_span("queue.bounce") as span:
            headers = await self._headers(st)
            st.bounces += 1
            bounce_id = new_queue_id()
            data = build_dsn(
                hostname=self.cfg.server.hostname,
                to=st.sender,
                original_id=st.id,
                received_at=st.received_at,
                failures=failures,
                headers=headers,
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
            if ack.duplicate:
                log.info("bounce %d already sent", st.bounces)
                return ""
        BOUNCES.inc()
        log.info(
            "sender non-delivery notification %s",
            bounce_id,
            extra={"recipients": [f.recipient for f in failures]},
        )
        return bounce_id
