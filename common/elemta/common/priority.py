"""Message priorities: RFC 6710's MT-PRIORITY and the ``[priorities]`` rules.

A message's priority is an integer from -9 to 9 (0: none given), kept in its
envelope and in every delivery job made from it. It comes from, in order:

1. the ``MT-PRIORITY`` parameter of MAIL FROM, when the client authenticated
   (SMTP AUTH) or connects from ``server.trusted_networks``. Other clients may
   send the parameter (it is offered to everyone) but it is not honoured: their
   message gets what the rules give, as RFC 6710 section 4.1 lets a server's
   policy lower a priority the client has no right to;
2. ``priorities.users``: the SMTP AUTH login;
3. ``priorities.senders``: the sender address, its domain, then its ``.parent``
   domains, longest first;
4. ``priorities.routes``: each recipient's domain or ``.parent`` domain; the
   highest of the recipients';
5. else 0.

The priority picks a delivery *class* (``high``, ``normal``, ``low``,
:meth:`~elemta.common.config.PrioritySettings.class_of`), which names the
subjects and consumers the message and its jobs travel by
(:mod:`elemta.common.names`).
"""

from __future__ import annotations

import re

from .config import PRIORITY_MAX, PRIORITY_MIN, PrioritySettings

__all__ = ["BAD_MT_PRIORITY", "Priorities", "read_mt_priority"]

BAD_MT_PRIORITY = "501 5.5.4 Bad MT-PRIORITY parameter: a number from -9 to 9"

_VALUE = re.compile(r"^[+-]?[0-9]$")


def read_mt_priority(value: str | None) -> int | str:
    """``MT-PRIORITY=<-9..9>``: the priority, or the refusal (``501 5.5.4``)."""
    if value is None or not _VALUE.match(value):
        return BAD_MT_PRIORITY
    return int(value)


def _domain_rule(rules: dict[str, int], domain: str) -> int | None:
    """``domain`` itself, then ``.parent`` keys from the longest."""
    hit = rules.get(domain)
    if hit is not None:
        return hit
    labels = domain.split(".")
    for i in range(len(labels)):
        hit = rules.get("." + ".".join(labels[i:]))
        if hit is not None:
            return hit
    return None


class Priorities:
    """The rules of ``[priorities]``, applied to one message at a time."""

    def __init__(self, settings: PrioritySettings) -> None:
        self.settings = settings
        self.enabled = settings.enabled

    def assign(
        self,
        sender: str,
        recipients: list[str],
        user: str = "",
        mt_priority: int | None = None,
        honoured: bool = False,
    ) -> int:
        """The message's priority (see the module's docstring for the order)."""
        s = self.settings
        if not self.enabled:
            return 0
        if mt_priority is not None and honoured:
            return max(PRIORITY_MIN, min(PRIORITY_MAX, mt_priority))
        if user and s.users:
            hit = s.users.get(user.lower())
            if hit is not None:
                return hit
        if sender and s.senders:
            sender = sender.lower()
            hit = s.senders.get(sender)
            if hit is None:
                hit = _domain_rule(s.senders, sender.rpartition("@")[2])
            if hit is not None:
                return hit
        if s.routes:
            hits = [_domain_rule(s.routes, r.rpartition("@")[2].lower()) for r in recipients]
            found = [h for h in hits if h is not None]
            if found:
                return max(found)
        return 0

    def class_of(self, priority: int) -> str:
        return self.settings.class_of(priority) if self.enabled else "normal"
