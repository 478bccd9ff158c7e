"""The MTA side of the Sendmail milter protocol, so that the filters mail
administrators already run with Postfix or Sendmail (OpenDKIM, OpenDMARC,
clamav-milter, rspamd's proxy, their own) plug into Elemta's policy.

:mod:`.protocol` is the wire format and option negotiation, :mod:`.client`
one message's conversation with one milter, :mod:`.message` the envelope and
header edits milters make, :mod:`.chain` the pipeline check that asks every
configured milter in turn.
"""

from __future__ import annotations

from .chain import MilterChain
from .client import MilterAddress, MilterError, MilterResult, MilterSettings, converse

__all__ = [
    "MilterAddress",
    "MilterChain",
    "MilterError",
    "MilterResult",
    "MilterSettings",
    "converse",
]
