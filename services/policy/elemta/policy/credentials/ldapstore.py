"""The LDAP user store (read-only): OpenLDAP, Active Directory, 389 DS.

Two ways to check a password, both by binding as the user, so the directory's own
password policy applies:

* bind mode (``users.ldap_user_dn``): the user's DN is built from the login;
* search-and-bind: the service account (``ldap_bind_dn``, or anonymous) searches
  ``ldap_base_dn`` with ``ldap_user_filter``; exactly one entry must match.

TLS: ``ldaps://`` or StartTLS (``ldap_start_tls``), the certificate verified
against ``ldap_ca_file`` or the system roots. ldap3 blocks, so each check runs in
a thread, with a fresh connection (binding as a user changes a connection's
identity).
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

from ldap3 import BASE, NONE, SUBTREE, Connection, Server, Tls
from ldap3.core.exceptions import LDAPException
from ldap3.utils.conv import escape_filter_chars
from ldap3.utils.dn import escape_rdn

from elemta.common.config import UsersSettings

from .store import ReadOnlyStore, StoreUnavailable, User, normalise_address

__all__ = ["LdapStore"]


class LdapStore:
    read_only = True

    def __init__(self, settings: UsersSettings) -> None:
        if not settings.ldap_url:
            raise ReadOnlyStore("users.ldap_url is required with users.store = ldap")
        self.s = settings
        tls = Tls(
            validate=ssl.CERT_REQUIRED,
            ca_certs_file=settings.ldap_ca_file or None,
            version=ssl.PROTOCOL_TLS_CLIENT,
        )
        self.server = Server(
            settings.ldap_url, get_info=NONE, tls=tls, connect_timeout=settings.ldap_timeout
        )
        self.attributes = list(settings.ldap_address_attributes)
        if settings.ldap_role_attribute:
            self.attributes.append(settings.ldap_role_attribute)

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def _connect(self, dn: str | None, password: str | None) -> Connection:
        conn = Connection(
            self.server,
            user=dn,
            password=password,
            receive_timeout=max(1, round(self.s.ldap_timeout)),  # ldap3 packs an int
            raise_exceptions=False,
        )
        conn.open()
        if self.s.ldap_start_tls and not self.s.ldap_url.lower().startswith("ldaps:"):
            conn.start_tls()
        return conn

    def _user(self, login: str, entry: dict[str, Any]) -> User:
        owned: list[str] = []
        for attr in self.s.ldap_address_attributes:
            owned.extend(str(v) for v in entry.get(attr, []) or [])
        user_roles: list[str] = []
        if self.s.ldap_role_attribute:
            user_roles = [str(v) for v in entry.get(self.s.ldap_role_attribute, []) or []]
        return User(
            login=normalise_address(login),
            roles=tuple(user_roles or self.s.ldap_default_roles),
            addresses=tuple(dict.fromkeys(normalise_address(a) for a in owned)),
        )

    def _find(self, login: str) -> tuple[str, dict[str, Any]] | None:
        """Search-and-bind's first half: the one entry of ``login``, as the service."""
        secret = self.s.ldap_bind_password.get_secret_value()
        conn = self._connect(self.s.ldap_bind_dn or None, secret or None)
        try:
            if self.s.ldap_bind_dn and not conn.bind():
                why = conn.result.get("description")
                raise StoreUnavailable(f"LDAP service bind refused: {why}")
            flt = self.s.ldap_user_filter.replace("{login}", escape_filter_chars(login))
            conn.search(self.s.ldap_base_dn, flt, SUBTREE, attributes=self.attributes, size_limit=2)
            if len(conn.entries) != 1:
                return None
            entry = conn.response[0]
            return str(entry["dn"]), dict(entry.get("attributes", {}))
        finally:
            conn.unbind()

    def _check(self, login: str, password: str) -> User | None:
        if not password or not login:
            return None  # an empty password is an anonymous bind, which "succeeds"
        try:
            if self.s.ldap_user_dn:
                dn = self.s.ldap_user_dn.replace("{login}", escape_rdn(login))
                attrs: dict[str, Any] | None = None
            else:
                found = self._find(login)
                if found is None:
                    return None
                dn, attrs = found
            conn = self._connect(dn, password)
            try:
                if not conn.bind():
                    return None
                if attrs is None:
                    conn.search(dn, "(objectClass=*)", BASE, attributes=self.attributes)
                    attrs = dict(conn.response[0].get("attributes", {})) if conn.response else {}
            finally:
                conn.unbind()
        except LDAPException as exc:
            raise StoreUnavailable(f"LDAP: {exc.__class__.__name__}: {exc}") from exc
        return self._user(login, attrs)

    async def authenticate(self, login: str, password: str) -> User | None:
        return await asyncio.to_thread(self._check, login, password)

    def _lookup(self, login: str) -> User | None:
        try:
            found = self._find(login)
        except LDAPException as exc:
            raise StoreUnavailable(f"LDAP: {exc.__class__.__name__}: {exc}") from exc
        return None if found is None else self._user(login, found[1])

    async def get(self, login: str) -> User | None:
        return await asyncio.to_thread(self._lookup, login)
