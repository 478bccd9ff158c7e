"""The milters as one check of the pipeline, at end of DATA.

Each milter in turn gets the message as the milters before it left it. A
refusal (``reject``, ``tempfail``, a reply code) or ``discard`` from any of
them is the verdict; a quarantine holds the message but lets the later
milters run, as in Postfix. A milter that cannot answer — unreachable, too
slow, broken — gets its ``default_action`` (Postfix's
``milter_default_action``): ``accept`` goes on as if it were not there,
``quarantine`` holds, ``tempfail`` answers ``451 4.3.5``, ``reject``
``550 5.5.0``.

The edits of all milters come back as one :class:`~elemta.policy.checks.Changes`.
"""

from __future__ import annotations

import logging
from typing import Any

from prometheus_client import Counter

from ..checks import ACCEPT, DISCARD, HOLD, REJECT, TEMPFAIL, Verdict
from .client import MilterError, MilterResult, MilterSettings, converse
from .message import MessageState

__all__ = ["MilterChain"]

log = logging.getLogger(__name__)

MILTER_REPLIES = Counter(
    "elemta_policy_milter_replies_total",
    "Milter conversations by how they ended (failed: the default action applied)",
    ["milter", "action"],
)

DEFAULT_REPLIES = {
    "tempfail": "451 4.3.5 Server configuration problem - try again later",
    "reject": "550 5.5.0 Service unavailable",
}


def _refusal(reply: str, action: str) -> Verdict:
    code, enhanced, reason = (reply.split(" ", 2) + ["", ""])[:3]
    return Verdict(action=action, code=int(code), enhanced=enhanced, reason=reason)


class MilterChain:
    """A pipeline check (``data`` stage) asking each configured milter in order."""

    def __init__(self, milters: list[MilterSettings]) -> None:
        self.milters = list(milters)

    @property
    def names(self) -> list[str]:
        return [m.label for m in self.milters]

    async def data(
        self, session: dict[str, Any], sender: str, recipients: list[str], message: bytes
    ) -> Verdict | None:
        if not self.milters:
            return None
        state = MessageState.parse(sender, recipients, message)
        record: list[dict[str, Any]] = []
        held: str | None = None
        for milter in self.milters:
            try:
                result = await converse(milter, session, state)
            except MilterError as exc:
                action = milter.default_action
                log.warning("milter %s: %s; default action %s", milter.label, exc, action)
                MILTER_REPLIES.labels(milter.label, "failed").inc()
                record.append({"milter": milter.label, "failed": str(exc), "default": action})
                if action == "quarantine":
                    held = held or f"milter {milter.label} unavailable"
                elif action != "accept":
                    return self._verdict(_refusal(DEFAULT_REPLIES[action], action), record)
                continue
            MILTER_REPLIES.labels(milter.label, result.action).inc()
            record.append(_note(milter, result))
            if result.action in ("reject", "tempfail"):
                action = REJECT if result.action == "reject" else TEMPFAIL
                return self._verdict(_refusal(result.reply, action), record)
            if result.action == "discard":
                return self._verdict(Verdict(action=DISCARD), record)
            if result.quarantine is not None:
                held = held or result.quarantine
        verdict = Verdict(action=HOLD if held is not None else ACCEPT, changes=state.changes())
        if held is not None:
            verdict.reason = held
        return self._verdict(verdict, record)

    @staticmethod
    def _verdict(verdict: Verdict, record: list[dict[str, Any]]) -> Verdict:
        verdict.notes["milters"] = record
        return verdict


def _note(milter: MilterSettings, result: MilterResult) -> dict[str, Any]:
    note: dict[str, Any] = {"milter": milter.label, "action": result.action, "at": result.stage}
    if result.reply:
        note["reply"] = result.reply
    if result.quarantine is not None:
        note["quarantine"] = result.quarantine
    if result.edits:
        note["edits"] = result.edits
    return note
