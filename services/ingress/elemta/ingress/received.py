"""The ``Received:`` trace header (RFC 5321 section 4.4) ingress prepends."""

from __future__ import annotations

import functools
import time
from datetime import UTC, datetime
from email.utils import format_datetime

from .text import clean_text

__all__ = ["protocol_name", "received_header"]


def protocol_name(esmtp: bool, tls: bool, authenticated: bool = False) -> str:
    """The ``with`` clause: SMTP, ESMTP, ESMTPS, ESMTPA or ESMTPSA (RFC 3848)."""
    if not esmtp:
        return "SMTP"
    return "ESMTP" + ("S" if tls else "") + ("A" if authenticated else "")


@functools.lru_cache(maxsize=4)  # the messages of one second share their date
def _stamp(second: int) -> str:
    return format_datetime(datetime.fromtimestamp(second, UTC))


def _clean(text: str, limit: int = 255, special: str = "()[]") -> str:
    return clean_text(text, limit, special) or "unknown"


def received_header(
    *,
    helo: str,
    client_ip: str,
    hostname: str,
    protocol: str,
    queue_id: str,
    recipients: list[str],
    client_name: str = "unknown",
    when: float | None = None,
) -> bytes:
    """Build the header, CRLF-terminated and folded the way Postfix folds it.

    ``for <rcpt>`` is added only when there is exactly one recipient, so that a
    message to many recipients does not disclose the others.
    """
    stamp = _stamp(int(time.time() if when is None else when))
    text = (
        f"Received: from {_clean(helo)} ({_clean(client_name)} [{_clean(client_ip, 64, special='[]')}])\r\n"
        f"\tby {hostname} (Elemta) with {protocol} id {queue_id}"
    )
    if len(recipients) == 1:
        text += f"\r\n\tfor <{_clean(recipients[0], 512, special='<>')}>; {stamp}\r\n"
    else:
        text += f";\r\n\t{stamp}\r\n"
    return text.encode("utf-8", "replace")
