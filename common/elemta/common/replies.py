"""SMTP replies, what becomes of a recipient, and the permanent/temporary error pair.

One vocabulary for every service:

* :class:`Reply` -- what an SMTP server said, or what Elemta says itself: the
  code (RFC 5321), the enhanced status code (RFC 3463) and the text.
  ``str(reply)`` is the line on the wire; :meth:`Reply.parse` reads a server's
  answer; :func:`with_enhanced_code` completes a reply line that lacks its
  enhanced code (RFC 2034 wants one on every reply but the greeting, EHLO and 354).
* :class:`Status` -- the state of one recipient: ``delivered``, ``deferred`` and
  ``failed`` are what an attempt gives (2xx, 4xx, 5xx); ``bounced`` and
  ``expired`` are final, a DSN sent to the sender (``failed`` as a final state:
  the recipient of a bounce that failed, never bounced again). The values are
  the strings stored in JetStream.
* The errors that carry a reply, split the way a mail administrator splits them
  (and as kopf splits ``PermanentError`` and ``TemporaryError``)::

      ReplyError                    .reply .code .enhanced .text
      ├── PermanentError            5xx: refused now, or bounced; never retried
      │   └── PermanentDnsError     550 5.1.2 / 5.4.4, NoSuchDomain, NullMx 556 5.1.10
      └── TemporaryError            4xx: answered 4xx, or deferred and retried
          ├── TemporaryDnsError     451 4.4.3
          ├── PolicyUnavailable     451 4.3.0  (ingress: policy cannot be asked)
          └── QueueUnavailable      451 4.3.0  (ingress: JetStream did not store)

  A service raises the side that fits and maps it once, at its edge: ingress
  answers the reply, delivery reports it per recipient, the queue bounces or
  retries by its :class:`Status`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .envelope import RecipientResult

__all__ = [
    "PermanentError",
    "Reply",
    "ReplyError",
    "Status",
    "TemporaryError",
    "default_enhanced",
    "with_enhanced_code",
]


class Status(StrEnum):
    """What became of one recipient (the strings stored in JetStream)."""

    DELIVERED = "delivered"  # 2xx: the next hop took it
    DEFERRED = "deferred"  # 4xx: tried again later
    FAILED = "failed"  # 5xx: permanent; the recipient goes into a bounce
    BOUNCED = "bounced"  # final: a DSN went to the sender
    EXPIRED = "expired"  # final: the queue lifetime ran out (4.4.7), a DSN went out

    @classmethod
    def of_code(cls, code: int) -> Status:
        """2xx delivered, 5xx failed, anything else (4xx, nonsense) deferred."""
        klass = code // 100
        if klass == 2:
            return cls.DELIVERED
        if klass == 5:
            return cls.FAILED
        return cls.DEFERRED


_ENHANCED = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})(?:\s+|$)")
_HAS_ENHANCED = re.compile(r"^\d{3}[ -][245]\.\d{1,3}\.\d{1,3}( |$)")
# The enhanced code Elemta gives its own replies of each code (RFC 3463, 5248).
_DEFAULT_ENHANCED = {
    220: "2.0.0",
    221: "2.0.0",
    250: "2.0.0",
    251: "2.1.5",
    252: "2.0.0",
    421: "4.3.0",
    450: "4.2.0",
    451: "4.3.0",
    452: "4.3.1",
    454: "4.7.0",
    500: "5.5.2",
    501: "5.5.4",
    502: "5.5.1",
    503: "5.5.1",
    504: "5.5.4",
    530: "5.7.0",
    552: "5.3.4",
    553: "5.1.3",
    554: "5.7.0",
    555: "5.5.4",
}


def default_enhanced(code: int) -> str:
    """The enhanced code Elemta gives its own reply ``code`` (else ``<class>.0.0``)."""
    return _DEFAULT_ENHANCED.get(code, f"{code // 100}.0.0")


def with_enhanced_code(line: str) -> str:
    """A reply line with an RFC 3463 enhanced status code after the reply code."""
    if len(line) < 3 or line[0] not in "245" or not line[:3].isdigit():
        return line
    if _HAS_ENHANCED.match(line) and line[4] == line[0]:  # one of another class is wrong
        return line
    code, sep, text = line[:3], line[3:4] or " ", line[4:]
    return f"{code}{sep}{default_enhanced(int(code))} {text}".rstrip()


@dataclass(frozen=True, slots=True)
class Reply:
    code: int
    enhanced: str
    text: str

    @classmethod
    def parse(cls, code: int, message: str) -> Reply:
        """A server's reply; multi-line text joins into one line, each line's
        repetition of the enhanced code (RFC 2034) dropped. Without an enhanced
        code of its class, a remote reply gets ``<class>.0.0``: guessing more
        would put words in the server's mouth."""
        if message.isprintable():  # one line (no line boundary is printable)
            line = message.strip()
            lines = [line] if line else []
        else:
            lines = [line.strip() for line in message.splitlines() if line.strip()]
        klass = code // 100
        m = _ENHANCED.match(lines[0]) if lines else None
        enhanced = f"{m.group(1)}.{m.group(2)}.{m.group(3)}" if m else ""
        if enhanced:
            lines = [
                line[len(enhanced) :].lstrip() if line.startswith(enhanced) else line
                for line in lines
            ]
        text = " ".join(line for line in lines if line)
        if klass not in (2, 4, 5):
            return cls(code, "4.5.0", f"unexpected reply: {code} {text}".strip())
        if not enhanced or int(enhanced[0]) != klass:  # none, or of another class
            enhanced = f"{klass}.0.0"
        return cls(code, enhanced, text)

    @classmethod
    def from_line(cls, line: str) -> Reply:
        """``"550 5.7.1 text"`` (the enhanced code completed when missing)."""
        full = with_enhanced_code(line.strip())
        code, _, rest = full.partition(" ")
        enhanced, _, text = rest.partition(" ")
        if not _ENHANCED.match(enhanced):
            enhanced, text = default_enhanced(int(code)), rest
        return cls(int(code), enhanced, text)

    @property
    def status(self) -> Status:
        return Status.of_code(self.code)

    @property
    def ok(self) -> bool:
        return self.code // 100 == 2

    @property
    def permanent(self) -> bool:
        return self.code // 100 == 5

    def result(self, recipient: str) -> RecipientResult:
        """This reply as the result for one recipient of an attempt."""
        from .envelope import RecipientResult  # envelope uses Status: import here

        return RecipientResult(recipient, self.status, self.code, self.enhanced, self.text)

    def __str__(self) -> str:
        return f"{self.code} {self.enhanced} {self.text}"


class ReplyError(Exception):
    """An error that reads as an SMTP reply (``code``, ``enhanced``, ``text``)."""

    code = 451
    enhanced = "4.3.0"

    def __init__(
        self, text: str = "", *, code: int | None = None, enhanced: str | None = None
    ) -> None:
        super().__init__(text)
        self.text = text
        if code is not None:
            self.code = code
        if enhanced is not None:
            self.enhanced = enhanced

    @classmethod
    def of(cls, reply: Reply) -> ReplyError:
        """The permanent or temporary error for ``reply``, by its class."""
        side = PermanentError if reply.permanent else TemporaryError
        return side(reply.text, code=reply.code, enhanced=reply.enhanced)

    @property
    def reply(self) -> Reply:
        return Reply(self.code, self.enhanced, self.text)

    def __str__(self) -> str:
        return str(self.reply)


class PermanentError(ReplyError):
    """5xx: the answer is final; refuse, or bounce, and never retry."""

    code = 550
    enhanced = "5.0.0"


class TemporaryError(ReplyError):
    """4xx: not now; answer 4xx, or defer and retry later."""

    code = 451
    enhanced = "4.3.0"
