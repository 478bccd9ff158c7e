"""DKIM: RFC 6376 / RFC 8463 vectors, signing, and errors that never raise.

Keys are served by the real DNS server on 127.0.0.1 and fetched through the
policy service's own TXT lookup (dkimpy's test data, zlib licence in
tests/data/dkim/dkimpy-LICENSE).
"""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from dkim_arc_helpers import DKIM_DATA, dns_settings, serve_txt

from elemta.common.config import DnsSettings
from elemta.policy.dkimcheck import DkimSigner, DkimVerifier, SigningKey

from support.dnsserver import DnsServer

VECTORS = json.loads((DKIM_DATA / "vectors.json").read_text())
RSA_1024_TXT = (DKIM_DATA / "test.txt").read_text().strip()
FOOTBALL = {
    "brisbane._domainkey.football.example.com": (
        "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="
    ),
    "test._domainkey.football.example.com": RSA_1024_TXT,
}
RFC_KEYS = [
    SigningKey.from_file(
        "football.example.com", "brisbane", "ed25519-sha256", DKIM_DATA / "rfc8032_7_1.key"
    ),
    SigningKey.from_file("football.example.com", "test", "rsa-sha256", DKIM_DATA / "test.private"),
]


def _data(name: str) -> bytes:
    return (DKIM_DATA / name.rsplit("/", 1)[-1]).read_bytes()


def _tags(header: bytes) -> dict[str, str]:
    value = b"".join(header.split(b":", 1)[1].split()).decode()
    return dict(t.split("=", 1) for t in value.split(";") if t)


async def test_the_rfc_8463_example_passes_with_both_its_ed25519_and_rsa_signatures(
    dns_server: DnsServer,
) -> None:
    serve_txt(dns_server, FOOTBALL)
    results = await DkimVerifier(dns_settings(dns_server)).verify(_data("rfc6376.signed.msg"))
    assert [(r.result, r.algorithm, r.selector, r.domain) for r in results] == [
        ("pass", "ed25519-sha256", "brisbane", "football.example.com"),
        ("pass", "rsa-sha256", "test", "football.example.com"),
    ]
    assert results[1].key_bits == 1024
    assert results[0].authres().startswith("dkim=pass (256-bit key) header.d=football.example.com")


async def test_every_dkimpy_vector_gives_its_expected_result(dns_server: DnsServer) -> None:
    serve_txt(dns_server, FOOTBALL)
    verifier = DkimVerifier(dns_settings(dns_server))
    for vector in VECTORS["verify"]:
        results = await verifier.verify(_data(vector["message"]))
        assert [r.result == "pass" for r in results] == vector["expect"], vector["message"]


async def test_signing_the_rfc_example_with_the_rfc_keys_verifies(dns_server: DnsServer) -> None:
    serve_txt(dns_server, FOOTBALL)
    message = _data("rfc6376.msg")
    headers = DkimSigner(RFC_KEYS).sign(message, "Football.Example.COM")
    assert len(headers) == 2
    tags = [_tags(h) for h in headers]
    assert [t["a"] for t in tags] == ["ed25519-sha256", "rsa-sha256"]
    assert all(t["c"] == "relaxed/relaxed" and t["d"] == "football.example.com" for t in tags)
    assert tags[0]["h"] == "from:to:subject:date:message-id:from"  # From oversigned
    results = await DkimVerifier(dns_settings(dns_server)).verify(b"".join(headers) + message)
    assert [r.result for r in results] == ["pass", "pass"]
    assert DkimSigner(RFC_KEYS).sign(message, "other.example") == []


async def test_a_tampered_body_or_an_added_from_fails(dns_server: DnsServer) -> None:
    serve_txt(dns_server, FOOTBALL)
    verifier = DkimVerifier(dns_settings(dns_server))
    signed = _data("rfc6376.signed.msg")
    body = await verifier.verify(signed.replace(b"We lost the game", b"We won the game"))
    assert [(r.result, r.reason) for r in body] == [("fail", "body hash did not verify")] * 2
    message = _data("rfc6376.msg")
    relaxed = b"".join(DkimSigner(RFC_KEYS).sign(message, "football.example.com")) + message
    second_from = relaxed.replace(b"To: ", b"From: evil@example.net\r\nTo: ", 1)
    assert [r.result for r in await verifier.verify(second_from)] == ["fail", "fail"]


BROKEN = [
    # (signature fields, what the key record is, expected result)
    (b"v=1; a=rsa-sha256; d=; s=test; h=from; bh=AAAA; b=AAAA", "permerror"),
    (b"v=1; a=rsa-sha256; d=football.example.com; s=; h=from; bh=AAAA; b=AAAA", "permerror"),
    (b"v=1; a=rsa-sha256; s=test; h=from; bh=AAAA; b=AAAA", "permerror"),  # no d=
    (b"v=1; a=rsa-sha256; d=football.example.com; s=test; h=to; bh=AAAA; b=AAAA", "permerror"),
    (b"v=1; a=rsa-sha1; d=football.example.com; s=test; h=from; bh=AAAA; b=AAAA", "permerror"),
    (b"v=1; a=foo-sha256; d=football.example.com; s=test; h=from; bh=AAAA; b=AAAA", "permerror"),
    (b"v=1; a=rsa-sha256; d=football.example.com; s=nokey; h=from; bh=AAAA; b=AAAA", "permerror"),
    (b"v=1; a=rsa-sha256; d=football.example.com; s=badk; h=from; bh=AAAA; b=AAAA", "permerror"),
    (b"v=1; a=rsa-sha256; d=football.example.com; s=garbage; h=from; bh=AAAA; b=AAAA", "permerror"),
    (
        b"v=1; a=ed25519-sha256; d=football.example.com; s=test; h=from; bh=AAAA; b=AAAA",
        "permerror",
    ),
    (b"v=1; a=rsa-sha256; d=(bad); s=test; h=from; bh=AAAA; b=AAAA", "permerror"),
    (b"v=1; a=rsa-sha256; d=football.example.com; s=test; h=from; bh=!!; b=AAAA", "permerror"),
    (b"v=1; a=rsa-sha256; d=football.example.com; s=test; h=from; bh=AAAA; b=AAAA", "fail"),
    (b";;;==;", "permerror"),
    (b"", "permerror"),
]


async def test_malformed_signatures_and_keys_give_permerror_and_never_raise(
    dns_server: DnsServer,
) -> None:
    serve_txt(dns_server, FOOTBALL)
    serve_txt(
        dns_server,
        {
            "badk._domainkey.football.example.com": (DKIM_DATA / "test.txt")
            .read_text()
            .replace("k=rsa", "k=ed25519-sha256"),
            "garbage._domainkey.football.example.com": "v=DKIM1; k=rsa; p=notakey",
        },
    )
    verifier = DkimVerifier(dns_settings(dns_server))
    message = _data("rfc6376.msg")
    for fields, expected in BROKEN:
        results = await verifier.verify(b"DKIM-Signature: " + fields + b"\r\n" + message)
        assert [r.result for r in results] == [expected], (fields, results)
    # All of them at once: one result each, in order.
    many = b"".join(b"DKIM-Signature: " + f + b"\r\n" for f, _ in BROKEN) + message
    unlimited = DkimVerifier(dns_settings(dns_server), max_signatures=len(BROKEN))
    assert [r.result for r in await unlimited.verify(many)] == [e for _, e in BROKEN]
    # Past max_signatures (10 by default) signatures are not evaluated.
    assert [r.result for r in await verifier.verify(many)][10:] == ["neutral"] * (len(BROKEN) - 10)


@pytest.fixture
def silent_dns() -> Iterator[DnsSettings]:
    """A nameserver that never answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield DnsSettings(nameservers=["127.0.0.1"], port=sock.getsockname()[1], timeout=0.3)


async def test_a_dns_timeout_gives_temperror(silent_dns: DnsSettings) -> None:
    results = await DkimVerifier(silent_dns).verify(_data("rfc6376.signed.msg"))
    assert [r.result for r in results] == ["temperror", "temperror"]
    assert "timed out" in results[0].reason


async def test_an_unsigned_message_gives_a_single_none(silent_dns: DnsSettings) -> None:
    results = await DkimVerifier(silent_dns).verify(_data("rfc6376.msg"))
    assert [(r.result, r.authres()) for r in results] == [("none", "dkim=none")]
    assert [r.result for r in await DkimVerifier(silent_dns).verify(b"")] == ["none"]


INDEPENDENT = r"""
import json, sys
import dkim
keys = json.load(open(sys.argv[1]))
def dnsfunc(name, timeout=5):
    return keys.get(name.decode()).encode()
def verify(message, i):
    try:
        return dkim.DKIM(message).verify(i, dnsfunc=dnsfunc)
    except dkim.DKIMException:
        return False
message = sys.stdin.buffer.read()
d = dkim.DKIM(message)
count = sum(1 for k, _ in d.headers if k.lower() == b"dkim-signature")
print(json.dumps([verify(message, i) for i in range(count)]))
"""


def test_a_dual_signed_mail_verifies_with_an_independent_verifier(tmp_path: Path) -> None:
    ed = ed25519.Ed25519PrivateKey.generate()
    (tmp_path / "ed25519.pem").write_bytes(
        ed.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    ed_public = ed.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    signer = DkimSigner(
        [
            SigningKey.from_file(
                "example.com", "rsa2048", "rsa-sha256", DKIM_DATA / "2048_testkey.key"
            ),
            SigningKey.from_file("example.com", "ed", "ed25519-sha256", tmp_path / "ed25519.pem"),
        ]
    )
    message = (
        b"From: Alice <alice@example.com>\r\nTo: bob@example.net\r\nCc: carol@example.net\r\n"
        b"Subject: dual\r\nDate: Tue, 24 Nov 2026 18:00:00 +0000\r\n"
        b"Message-ID: <1@example.com>\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\nX-Other: not signed\r\n\r\n"
        b"Hello  Bob,\r\n\r\n  relaxed body\r\n\r\n\r\n"
    )
    signed = b"".join(signer.sign(message, "example.com")) + message
    keys = {
        "rsa2048._domainkey.example.com.": (DKIM_DATA / "2048_testkey_wo_markers.pub.txt")
        .read_text()
        .strip(),
        "ed._domainkey.example.com.": "v=DKIM1; k=ed25519; p="
        + base64.b64encode(ed_public).decode(),
    }
    (tmp_path / "keys.json").write_text(json.dumps(keys))
    run = subprocess.run(
        [sys.executable, "-c", INDEPENDENT, str(tmp_path / "keys.json")],
        input=signed,
        capture_output=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr.decode()
    assert json.loads(run.stdout) == [True, True]
    run = subprocess.run(
        [sys.executable, "-c", INDEPENDENT, str(tmp_path / "keys.json")],
        input=signed.replace(b"relaxed body", b"changed body"),
        capture_output=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr.decode()
    assert json.loads(run.stdout) == [False, False]


def test_keys_are_checked_when_the_signer_is_built(tmp_path: Path) -> None:
    seed = base64.b64encode(bytes(range(32)))
    DkimSigner([SigningKey("example.com", "s", "ed25519-sha256", seed)])
    bad = [
        SigningKey("example.com", "s", "ed25519-sha256", b"c2hvcnQ="),
        SigningKey("example.com", "s", "rsa-sha256", seed),
        SigningKey("example.com", "s", "rsa-sha1", _data("test.private")),
        SigningKey("example.com", "s", "ed25519-sha256", _data("test.private")),
    ]
    for key in bad:
        with pytest.raises(ValueError):
            DkimSigner([key])
    with pytest.raises(FileNotFoundError):
        SigningKey.from_file("example.com", "s", "rsa-sha256", tmp_path / "missing.pem")
