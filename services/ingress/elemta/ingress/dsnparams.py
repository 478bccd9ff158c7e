"""The DSN extension's parameters (RFC 3461): RET and ENVID on MAIL, NOTIFY and ORCPT on RCPT.

Each reader takes the parameter's value and returns either the value to keep
(normalised) or the refusal; :mod:`.arguments` stores what is kept and the
envelope carries it to the queue, which writes the notices, and to delivery,
which passes the parameters on to a next hop that offers DSN.

ENVID and ORCPT are xtext (RFC 3461 section 4): printable ASCII with ``+XX``
hex escapes for ``+``, ``=`` and anything outside ``!``..``~``
(:mod:`elemta.common.xtext`). They are kept as they arrived (still encoded), so
they can be relayed unchanged, and decoded only when a notice shows them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from elemta.common.xtext import XTEXT as _XTEXT
from elemta.common.xtext import xtext_decode

__all__ = [
    "DsnRequest",
    "ENVID_MAX",
    "ORCPT_MAX",
    "read_envid",
    "read_notify",
    "read_orcpt",
    "read_ret",
]

ENVID_MAX = 100  # characters of the decoded ENVID (RFC 3461 section 4.4)
ORCPT_MAX = 500  # characters of the ORCPT parameter (RFC 3461 section 4.2)
NOTIFY_WORDS = ("SUCCESS", "FAILURE", "DELAY")

_ADDR_TYPE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]*$")


def read_ret(value: str | None) -> str:
    """``RET=FULL`` or ``RET=HDRS``: the value upper-cased, or a refusal starting with 501."""
    ret = (value or "").upper()
    if ret not in ("FULL", "HDRS"):
        return "501 5.5.4 Bad RET parameter: FULL or HDRS"
    return ret


def read_envid(value: str | None) -> str:
    """``ENVID=<xtext>``: kept encoded; a refusal (501) when malformed or too long."""
    if not value or not _XTEXT.match(value) or len(xtext_decode(value)) > ENVID_MAX:
        return "501 5.5.4 Bad ENVID parameter"
    return value


def read_notify(value: str | None) -> str:
    """``NOTIFY=NEVER`` or a list of SUCCESS, FAILURE, DELAY: normalised, or a refusal."""
    words = [w.strip().upper() for w in (value or "").split(",")]
    if words == ["NEVER"]:
        return "NEVER"
    if not words or any(w not in NOTIFY_WORDS for w in words) or len(set(words)) != len(words):
        return "501 5.5.4 Bad NOTIFY parameter: NEVER or SUCCESS, FAILURE, DELAY"
    return ",".join(w for w in NOTIFY_WORDS if w in words)


def read_orcpt(value: str | None) -> str:
    """``ORCPT=<addr-type>;<xtext>``: kept encoded, or a refusal."""
    if not value or len(value) > ORCPT_MAX:
        return "501 5.5.4 Bad ORCPT parameter"
    addr_type, sep, address = value.partition(";")
    if not sep or not _ADDR_TYPE.match(addr_type) or not address or not _XTEXT.match(address):
        return "501 5.5.4 Bad ORCPT parameter"
    return f"{addr_type.lower() if addr_type.lower() == 'rfc822' else addr_type};{address}"


def is_refusal(value: str) -> bool:
    """What a reader returned is a reply, not a value."""
    return value.startswith("501 ")


@dataclass
class DsnRequest:
    """What one mail transaction asked of DSN, gathered at MAIL and RCPT."""

    ret: str = ""
    envid: str = ""
    notify: dict[str, str] = field(default_factory=dict)  # recipient -> NOTIFY
    orcpt: dict[str, str] = field(default_factory=dict)  # recipient -> ORCPT

    def add_recipient(self, recipient: str, notify: str, orcpt: str) -> None:
        if notify:
            self.notify[recipient] = notify
        if orcpt:
            self.orcpt[recipient] = orcpt
