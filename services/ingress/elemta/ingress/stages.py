"""Policy at MAIL FROM and RCPT TO, for clients outside the trusted networks.

Client checks (DNSBL) ride on the first MAIL FROM of a session, as Postfix's
``smtpd_delay_reject = yes`` delays client restrictions: the client learns why
at a stage where it expects refusals, and a session that never sends mail costs
no lookup. Sender checks (rate limits, sender DNSBL) answer MAIL FROM; recipient
checks (greylisting) answer each RCPT TO. Trusted clients — our own outbound
mail — skip the round trips entirely, which keeps relaying fast.

Only refusals count here: an accept, hold or discard verdict at these stages
lets the transaction go on (holding and discarding are decided on the message).
An unreachable policy service answers ``451 4.3.0``, as at end of DATA.
"""

from __future__ import annotations

from dataclasses import dataclass

from .policy_client import (
    POLICY_FAILURE,
    REJECT,
    TEMPFAIL,
    Decision,
    PolicyClient,
    PolicyUnavailable,
    SessionInfo,
)
from .relay import RelayControl

__all__ = ["StageChecks"]


@dataclass
class Client:
    """What the stage checks need from a session."""

    ip: str
    port: int
    helo: str
    tls: bool
    connect_checked: bool = False
    authenticated: bool = False
    hostname: str = ""  # forward-confirmed name, or "unknown"


def _refusal(decision: Decision) -> str | None:
    return decision.reply if decision.action in (REJECT, TEMPFAIL) else None


class StageChecks:
    def __init__(self, policy: PolicyClient, relay: RelayControl) -> None:
        self.policy = policy
        self.relay = relay

    def applies(self, client: Client) -> bool:
        return not client.authenticated and not self.relay.is_trusted(client.ip)

    async def mail(self, client: Client, sender: str) -> str | None:
        """None to go on, else the reply refusing MAIL FROM."""
        if not self.applies(client):
            return None
        info = SessionInfo(
            client.ip, client.port, client.helo, client.tls, client_hostname=client.hostname
        )
        try:
            if not client.connect_checked:
                refusal = _refusal(await self.policy.check_connect(info))
                if refusal:
                    return refusal
                client.connect_checked = True
            return _refusal(await self.policy.check_mail(info, sender))
        except PolicyUnavailable:
            return POLICY_FAILURE

    async def rcpt(self, client: Client, sender: str, recipient: str) -> str | None:
        """None to go on, else the reply refusing this RCPT TO."""
        if not self.applies(client):
            return None
        info = SessionInfo(
            client.ip, client.port, client.helo, client.tls, client_hostname=client.hostname
        )
        try:
            return _refusal(await self.policy.check_rcpt(info, sender, recipient))
        except PolicyUnavailable:
            return POLICY_FAILURE
