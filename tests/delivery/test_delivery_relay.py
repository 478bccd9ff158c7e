"""Smarthost routes: implicit TLS or required STARTTLS, certificate checks, SMTP AUTH
with credentials from files, against aiosmtpd relays on loopback."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from delivery_harness import Harness
from pydantic import ValidationError

from elemta.common.config import RelaySettings

from support.dnsserver import DnsServer, free_port


class Relay:
    """A smarthost: TLS (implicit or STARTTLS), AUTH only over TLS, one account."""

    def __init__(self, ca: trustme.CA, name: str, implicit: bool) -> None:
        self.port = free_port()
        self.messages: list[tuple[str, list[str]]] = []
        self.logins: list[str] = []
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert(name).configure_cert(context)
        # aiosmtpd advertises AUTH "only over TLS" after STARTTLS alone, not on
        # an implicit TLS connection, which is encrypted anyway.
        tls: dict[str, Any] = (
            {"ssl_context": context, "auth_require_tls": False}
            if implicit
            else {"tls_context": context, "require_starttls": True, "auth_require_tls": True}
        )
        self.controller = Controller(
            self,
            hostname="127.0.0.1",
            port=self.port,
            server_hostname=name,
            authenticator=self.authenticate,
            auth_required=True,
            **tls,
        )
        self.controller.start()

    def authenticate(self, server, session, envelope, mechanism, auth_data):  # type: ignore[no-untyped-def]
        ok = isinstance(auth_data, LoginPassword) and (
            auth_data.login,
            auth_data.password,
        ) == (b"relay-user", b"s3cret pass")
        if ok:
            self.logins.append(auth_data.login.decode())
        return AuthResult(success=ok, handled=False)

    async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos)))
        return "250 2.0.0 OK: relayed"

    def stop(self) -> None:
        self.controller.stop()


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


@pytest.fixture
def secrets(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "user").write_text("relay-user\n")
    (tmp_path / "password").write_text("s3cret pass\n")
    return {"username_file": str(tmp_path / "user"), "password_file": str(tmp_path / "password")}


@pytest.fixture
def smtps(ca: trustme.CA) -> Iterator[Relay]:
    relay = Relay(ca, "relay.test", implicit=True)
    yield relay
    relay.stop()


@pytest.fixture
def submission(ca: trustme.CA) -> Iterator[Relay]:
    relay = Relay(ca, "relay.test", implicit=False)
    yield relay
    relay.stop()


async def send(harness: Harness, relay: Relay, **entry: Any) -> tuple[str, int, str, str]:
    await harness.start(relays={f"[relay.test]:{relay.port}": entry})
    qid = await harness.submit(f"smtp:[relay.test]:{relay.port}", ["bob@far.example"])
    [r] = (await harness.outcome(qid)).results
    return r.status, r.code, r.enhanced, r.text


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")
async def test_a_smarthost_with_implicit_tls_gets_mail_after_authenticating(
    harness: Harness, dns_server: DnsServer, smtps: Relay, ca_file: str, secrets: dict[str, str]
) -> None:
    dns_server.add("relay.test", "A", "127.0.0.1")
    status, _code, _enhanced, text = await send(
        harness, smtps, implicit_tls=True, ca_file=ca_file, **secrets
    )
    assert status == "delivered", text
    assert smtps.logins == ["relay-user"]
    assert smtps.messages == [("alice@sender.test", ["bob@far.example"])]


async def test_a_smarthost_with_starttls_gets_mail_after_authenticating(
    harness: Harness,
    dns_server: DnsServer,
    submission: Relay,
    ca_file: str,
    secrets: dict[str, str],
) -> None:
    dns_server.add("relay.test", "A", "127.0.0.1")
    status, _code, _enhanced, text = await send(harness, submission, ca_file=ca_file, **secrets)
    assert status == "delivered", text
    assert submission.logins == ["relay-user"]


async def test_a_refused_login_defers_the_mail(
    harness: Harness,
    dns_server: DnsServer,
    submission: Relay,
    ca_file: str,
    secrets: dict[str, str],
    tmp_path: Path,
) -> None:
    dns_server.add("relay.test", "A", "127.0.0.1")
    (tmp_path / "password").write_text("wrong\n")
    status, code, enhanced, text = await send(harness, submission, ca_file=ca_file, **secrets)
    assert (status, code, enhanced) == ("deferred", 454, "4.7.0"), text
    assert "authentication failed" in text and "wrong" not in text
    assert submission.messages == []


async def test_a_smarthost_whose_certificate_does_not_verify_is_not_given_the_password(
    harness: Harness, dns_server: DnsServer, submission: Relay, secrets: dict[str, str]
) -> None:
    dns_server.add("relay.test", "A", "127.0.0.1")
    status, _code, enhanced, text = await send(harness, submission, **secrets)  # system CAs
    assert (status, enhanced) == ("deferred", "4.7.5")
    assert "not trusted" in text
    assert submission.logins == [] and submission.messages == []


def test_credentials_are_refused_for_a_relay_reached_without_tls() -> None:
    with pytest.raises(ValidationError, match="only sent over TLS"):
        RelaySettings(security_level="may", username_file="/u", password_file="/p")
