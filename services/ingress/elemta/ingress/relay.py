"""Relay control at RCPT TO: who may send mail where.

Mail for ``server.local_domains`` and ``server.relay_domains`` (domains this
server is an inbound gateway or backup MX for, Postfix's ``relay_domains``) is
welcome from anyone. Mail for any other destination is relayed only for clients
inside ``server.trusted_networks`` and clients authenticated with SMTP AUTH;
everyone else reads ``554 5.7.1 <rcpt>: Relay access denied``, so Elemta is never
an open relay. As Postfix does with ``allow_untrusted_routing = no``, a local
address that hides another route in its local part (``user%other@local``,
``host!user@local``, ``"user@other"@local``) counts as relaying. A source route
(``<@other:user@local>``) never reaches here: it is dropped when the path is read.

Replies name the address made printable (:func:`clean_text`); the final reply
text is made printable ASCII once more where it is sent.
"""

from __future__ import annotations

from elemta.common.networks import Networks

from .address import split_mailbox
from .text import clean_text

__all__ = ["RelayControl", "split_address"]


def split_address(address: str) -> tuple[str, str] | None:
    """``(local part, lower-cased domain)``, or None when the address is malformed."""
    parts = split_mailbox(address)
    if parts is None:
        return None
    local, domain = parts
    return local, domain.lower().rstrip(".")


class RelayControl:
    def __init__(
        self,
        local_domains: list[str],
        trusted_networks: list[str],
        relay_domains: list[str] | None = None,
    ) -> None:
        self.local_domains = {d.lower().rstrip(".") for d in local_domains}
        self.relay_domains = {d.lower().rstrip(".") for d in relay_domains or []}
        self.networks = Networks(trusted_networks)

    def is_trusted(self, client_ip: str) -> bool:
        return client_ip in self.networks

    def is_local(self, domain: str) -> bool:
        return domain.lower().rstrip(".") in self.local_domains

    def normalize(self, address: str) -> str | None:
        """The recipient as it will be stored, or None when its syntax is bad.

        ``postmaster`` without a domain (RFC 5321 section 4.5.1) is taken as the
        postmaster of the first local domain.
        """
        if address.lower() == "postmaster" and self.local_domains:
            return f"postmaster@{sorted(self.local_domains)[0]}"
        return address if split_address(address) is not None else None

    def check(self, client_ip: str, address: str, authenticated: bool = False) -> str | None:
        """None when ``address`` may be accepted from ``client_ip`` (authenticated
        with SMTP AUTH or not), else the reply."""
        parts = split_address(address)
        if parts is None:
            return f"501 5.1.3 <{clean_text(address)}>: Bad recipient address syntax"
        if authenticated or self.is_trusted(client_ip):
            return None
        local, domain = parts
        ours = self.is_local(domain) or domain.lower().rstrip(".") in self.relay_domains
        if ours and not any(c in local for c in "%!@"):
            return None
        return f"554 5.7.1 <{clean_text(address)}>: Relay access denied"
