"""An Elemta policy plugin: refuse (or hold) mail carrying dangerous attachments.

Configured as::

    [[policy.plugins]]
    name = "attachments"
    options = { extensions = [".exe", ".scr", ".js"], action = "reject" }
"""

from __future__ import annotations

import email
import email.policy
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from elemta.policy.checks import Verdict
from elemta.policy.plugins import hookimpl

__all__ = ["AttachmentFilter", "Options", "factory"]

DANGEROUS = [".exe", ".scr", ".com", ".pif", ".bat", ".cmd", ".js", ".vbs", ".jar", ".lnk"]


class Options(BaseModel):
    """What the operator may set; Elemta checks it when it loads the plugin."""

    model_config = ConfigDict(extra="forbid")  # a misspelt key stops the load

    extensions: list[str] = Field(default_factory=lambda: list(DANGEROUS))
    action: Literal["reject", "hold"] = "reject"

    @field_validator("extensions")
    @classmethod
    def _dotted(cls, v: list[str]) -> list[str]:
        return [e.lower() if e.startswith(".") else f".{e.lower()}" for e in v]


class AttachmentFilter:
    def __init__(self, options: Options) -> None:
        self.options = options

    def found(self, message: bytes) -> list[str]:
        """The names of the attachments whose extension is on the list."""
        parsed = email.message_from_bytes(message, policy=email.policy.default)
        names = (part.get_filename() or "" for part in parsed.walk())
        return [n for n in names if n and n.lower().endswith(tuple(self.options.extensions))]

    @hookimpl
    async def check_data(
        self, session: dict[str, Any], sender: str, recipients: list[str], message: bytes
    ) -> Verdict | None:
        names = self.found(message)
        if not names:
            return None  # no opinion: the other checks decide
        notes = {"attachments": {"refused": names}}
        if self.options.action == "hold":
            return Verdict(
                action="hold", add_headers=[("X-Attachment-Hold", names[0])], notes=notes
            )
        return Verdict(
            action="reject",
            code=552,
            enhanced="5.7.0",
            reason=f"Attachment type not accepted: {names[0]}",
            notes=notes,
        )


def factory(options: Options) -> AttachmentFilter:
    """The entry point: Elemta validates ``options`` against :class:`Options` first."""
    return AttachmentFilter(options)
