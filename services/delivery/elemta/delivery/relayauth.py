"""SMTP AUTH (RFC 4954) to a smarthost, with credentials read from files.

The user name and password live in two files (``username_file``,
``password_file`` of a ``delivery.relays`` entry), typically a mounted
Kubernetes Secret; they are read each time a session opens, so a rotated
Secret takes effect without a restart, and they never appear in the
configuration, the logs or an outcome. A relay's entry must require TLS
before credentials are configured (see ``RelaySettings``); the session is
already encrypted when :func:`login` runs.

One mechanism is tried, the first the server offers of PLAIN, LOGIN and
CRAM-MD5 (the session is encrypted, so PLAIN is as safe as any, and one
attempt gives one clear answer). A refusal defers the mail (``454 4.7.0``), as Postfix does with
``smtp_sasl_auth_soft_bounce = yes``: a wrong password is fixed by the
administrator, and the mail should still be there when it is.
"""

from __future__ import annotations

from pathlib import Path

import aiosmtplib
from aiosmtplib import SMTPAuthenticationError, SMTPException

from elemta.common.config import RelaySettings
from elemta.common.replies import Reply

from .errors import SessionFailure, lost_connection

__all__ = ["credentials", "login"]

_MECHANISMS = ("plain", "login", "cram-md5")


def credentials(relay: RelaySettings) -> tuple[str, str]:
    """(user, password) from the relay's files, without a trailing line break."""
    user = Path(relay.username_file).read_text(encoding="utf-8").rstrip("\r\n")
    password = Path(relay.password_file).read_text(encoding="utf-8").rstrip("\r\n")
    return user, password


async def login(client: aiosmtplib.SMTP, relay: RelaySettings, peer: str) -> None:
    """Authenticate, or close the session and raise :class:`SessionFailure` (deferred)."""
    try:
        user, password = credentials(relay)
    except OSError as exc:
        client.close()
        raise SessionFailure(
            Reply(451, "4.3.5", f"cannot read the credentials for {peer}: {exc.strerror}")
        ) from None
    offered = [m for m in _MECHANISMS if m in client.supported_auth_methods]
    if not client.supports_extension("auth") or not offered:
        client.close()
        raise SessionFailure(Reply(451, "4.7.0", f"{peer} offers no usable SMTP AUTH"))
    try:
        await getattr(client, f"auth_{offered[0].replace('-', '')}")(user, password)
    except SMTPAuthenticationError as exc:
        client.close()
        text = " ".join(exc.message.split())
        raise SessionFailure(
            Reply(454, "4.7.0", f"authentication failed; server {peer} said: {exc.code} {text}")
        ) from None
    except (SMTPException, OSError, TimeoutError) as exc:
        client.close()
        raise SessionFailure(lost_connection(peer, "authenticating", exc)) from None
