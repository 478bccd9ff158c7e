"""Mail flows with the services talking as they do in a cluster: policy over mutual
TLS, NATS over TLS with credentials - real certificates, a real nats-server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from support.natsauth import SecureNats, write_pem

MESSAGE = "From: <alice@client.test>\r\nTo: <bob@local.test>\r\nSubject: over TLS\r\n\r\nHi.\r\n"


@pytest.fixture
def secure_nats(tmp_path: Path) -> Iterator[SecureNats]:
    server = SecureNats(tmp_path, "creds")
    server.start()
    yield server
    server.stop()


def cluster_tls(tmp: Path, nats: SecureNats, *, client_cert: bool = True) -> dict[str, Any]:
    ca = trustme.CA()
    server = ca.issue_cert("policy.elemta.test")
    client = ca.issue_cert("ingress.elemta.test")
    policy: dict[str, Any] = {
        "tls_cert": write_pem(tmp / "policy.crt", *server.cert_chain_pems),
        "tls_key": write_pem(tmp / "policy.key", server.private_key_pem),
        "tls_client_ca": write_pem(tmp / "ca.crt", ca.cert_pem),
        "tls_ca": str(tmp / "ca.crt"),
        "tls_server_name": "policy.elemta.test",
    }
    if client_cert:
        policy["client_cert"] = write_pem(tmp / "ingress.crt", *client.cert_chain_pems)
        policy["client_key"] = write_pem(tmp / "ingress.key", client.private_key_pem)
    return {
        "nats": {"url": nats.url, "tls_ca": nats.ca_file, "creds_file": nats.creds_file},
        "policy": policy,
    }


def test_mail_flows_over_mutual_tls_to_policy_and_tls_with_creds_to_nats(
    stack_factory: Any, secure_nats: SecureNats, tmp_path: Path, wait_for_maildir: Any
) -> None:
    stack = stack_factory(cluster_tls(tmp_path, secure_nats))
    code, reply = stack.send("alice@client.test", ["bob@local.test"], MESSAGE)
    assert code == 250, reply
    (msg,) = wait_for_maildir(stack.workdir / "var" / "mail", "bob@local.test")
    assert msg["Subject"] == "over TLS"
    assert "(mTLS)" in stack.processes["policy"].log()


def test_ingress_without_a_client_certificate_gets_no_verdict_and_keeps_nothing(
    stack_factory: Any, secure_nats: SecureNats, tmp_path: Path
) -> None:
    settings = cluster_tls(tmp_path, secure_nats, client_cert=False)
    settings["ingress"] = {"trusted_policy": "always"}  # loopback is trusted: ask anyway
    stack = stack_factory(settings)
    code, reply = stack.send("alice@client.test", ["bob@local.test"], MESSAGE)
    assert (code, reply[:5]) == (451, b"4.3.0"), reply
