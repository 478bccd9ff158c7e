"""When the sender hears about a recipient: the rules of RFC 3461 (DSN) on top of bounces.

The sender's ``NOTIFY`` for each recipient (kept in the message state from the
envelope) decides which notices go out:

* ``NOTIFY=NEVER``: none at all, not even a failure;
* ``NOTIFY`` with ``FAILURE``: a failure notice (the bounce of :mod:`.bounce`);
* ``NOTIFY`` with ``SUCCESS``: a success notice when the recipient is
  delivered: ``Action: delivered`` for final delivery (Maildir, LMTP),
  ``relayed`` when the next SMTP hop does not speak DSN; none when it does,
  since the parameters went on with the message and the notice is the next
  hop's to send (RFC 3461 section 6.2.1);
* ``NOTIFY`` with ``DELAY``: one delay warning per recipient, once the message
  has waited ``queue.delay_warning_time`` and is still being retried.

Without ``NOTIFY`` (a client that does not use DSN), failures and delays are
reported (RFC 3461 section 4.1 leaves this default to the MTA; it is Postfix's
with ``delay_warning_time`` set) and success is not. A message from the null
sender never gets a notice.
"""

from __future__ import annotations

from elemta.common.envelope import RecipientResult

from .bounce import Bouncer, Failure
from .state import MessageState

__all__ = ["Notices", "failures_to_notify", "wants"]

DEFAULT_NOTIFY = ("FAILURE", "DELAY")


def wants(st: MessageState, recipient: str, what: str) -> bool:
    """Did the sender ask to hear ``what`` (SUCCESS, FAILURE, DELAY) about ``recipient``?"""
    notify = st.dsn_notify.get(recipient, "")
    if not notify:
        return what in DEFAULT_NOTIFY
    return what in notify.split(",")


def failures_to_notify(st: MessageState, failures: list[Failure]) -> list[Failure]:
    """The failures the sender asked to be told of (all of them for the null sender,
    whose failures the bouncer only records)."""
    if st.is_bounce or not st.sender:
        return failures
    return [f for f in failures if wants(st, f.recipient, "FAILURE")]


class Notices:
    """Success notices and delay warnings, sent through the bouncer."""

    def __init__(self, bouncer: Bouncer, delay_warning_time: float) -> None:
        self.bouncer = bouncer
        self.delay_warning_time = delay_warning_time

    async def delivered(
        self, st: MessageState, results: list[RecipientResult], host: str, route_kind: str
    ) -> str:
        """One success notice for the delivered ``results`` whose sender asked for one."""
        final = route_kind in ("local", "lmtp")
        entries = [
            Failure(
                recipient=r.recipient,
                status=r.enhanced if r.enhanced[:1] == "2" else "2.0.0",
                code=r.code,
                text=r.text,
                host=host,
                enhanced=r.enhanced,
                action="delivered" if final else "relayed",
            )
            for r in results
            if wants(st, r.recipient, "SUCCESS") and not r.dsn_passed
        ]
        return await self.bouncer.bounce(st, entries, kind="delivered")

    async def delayed(
        self, st: MessageState, results: list[RecipientResult], host: str, now: float
    ) -> str:
        """One delay warning for the deferred ``results`` that waited past the warning
        time, asked for it, and were not warned before (once per recipient)."""
        if self.delay_warning_time <= 0 or now - st.received_at < self.delay_warning_time:
            return ""
        entries = [
            Failure(
                recipient=r.recipient,
                status=r.enhanced if r.enhanced[:1] == "4" else "4.0.0",
                code=r.code,
                text=r.text,
                host=host,
                enhanced=r.enhanced,
                action="delayed",
            )
            for r in results
            if r.recipient not in st.delay_warned and wants(st, r.recipient, "DELAY")
        ]
        notice = await self.bouncer.bounce(st, entries, kind="delayed")
        st.delay_warned.extend(e.recipient for e in entries)
        return notice
