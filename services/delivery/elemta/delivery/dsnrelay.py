"""Passing the sender's DSN parameters on to a next hop that offers DSN (RFC 3461 section 6).

When the peer's EHLO lists ``DSN``, MAIL FROM carries ``RET`` and ``ENVID`` and
each RCPT TO its ``NOTIFY`` and ``ORCPT``, as the client gave them (ENVID and
ORCPT are still xtext). Recipients delivered that way are marked
``dsn_passed``: a success notice is then the next hop's to send, and the queue
sends none. A peer without DSN gets none of these parameters, and the queue
reports success itself as ``relayed``.
"""

from __future__ import annotations

from elemta.common.envelope import DeliveryJob, RecipientResult
from elemta.common.replies import Status

__all__ = ["mail_options", "mark_passed", "rcpt_options"]


def mail_options(job: DeliveryJob) -> list[bytes]:
    """The ``RET=`` and ``ENVID=`` parameters for MAIL FROM."""
    out = []
    if job.dsn_ret:
        out.append(b"RET=" + job.dsn_ret.encode("ascii"))
    if job.dsn_envid:
        out.append(b"ENVID=" + job.dsn_envid.encode("ascii"))
    return out


def rcpt_options(job: DeliveryJob, recipient: str) -> bytes:
    """`` NOTIFY=... ORCPT=...`` for one RCPT TO (empty when the sender gave neither)."""
    out = b""
    notify = job.dsn_notify.get(recipient)
    if notify:
        out += b" NOTIFY=" + notify.encode("ascii")
    orcpt = job.dsn_orcpt.get(recipient)
    if orcpt:
        out += b" ORCPT=" + orcpt.encode("ascii")
    return out


def mark_passed(results: list[RecipientResult]) -> None:
    """The delivered recipients went on with their DSN parameters."""
    for r in results:
        if r.status == Status.DELIVERED:
            r.dsn_passed = True
