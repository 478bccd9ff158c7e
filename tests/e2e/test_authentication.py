"""SPF, DKIM and DMARC decide at end of DATA, through the running services."""

from __future__ import annotations

import base64
import email
import email.policy
import subprocess
import sys
from pathlib import Path

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from support.smtpsink import SmtpSink

UNTRUSTED = {"trusted_networks": ["10.0.0.0/8"], "relay_domains": ["gateway.test"]}


def _txt(value: str) -> str:
    """Zone-file TXT data: strings of at most 255 characters."""
    return " ".join(f'"{value[i : i + 255]}"' for i in range(0, len(value), 255))


def _keys(tmp_path: Path) -> tuple[Path, str, Path, str]:
    """An RSA-2048 and an ed25519 key in PEM files, with their DNS key records."""
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rsa_path = tmp_path / "rsa.pem"
    rsa_path.write_bytes(
        rsa_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    rsa_pub = rsa_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    ed_key = ed25519.Ed25519PrivateKey.generate()
    ed_path = tmp_path / "ed.pem"
    ed_path.write_bytes(
        ed_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    ed_pub = ed_key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    return (
        rsa_path,
        f"v=DKIM1; k=rsa; p={base64.b64encode(rsa_pub).decode()}",
        ed_path,
        f"v=DKIM1; k=ed25519; p={base64.b64encode(ed_pub).decode()}",
    )


def _message(author: str, to: str) -> bytes:
    return (
        f"From: {author}\r\nTo: {to}\r\nSubject: quarterly numbers\r\n"
        f"Date: Tue, 24 Nov 2026 10:00:00 +0000\r\nMessage-ID: <q4@client.test>\r\n\r\n"
        "Numbers attached.\r\n"
    ).encode()


def test_spf_fail_with_dmarc_reject_is_refused_at_end_of_data(stack_factory, dns_server):
    dns_server.add("forged.test", "TXT", '"v=spf1 ip4:192.0.2.1 -all"')
    dns_server.add("_dmarc.forged.test", "TXT", '"v=DMARC1; p=reject"')
    stack = stack_factory({"server": UNTRUSTED})
    with stack.smtp() as s:
        s.ehlo()
        assert s.mail("ceo@forged.test")[0] == 250
        assert s.rcpt("bob@local.test")[0] == 250
        code, text = s.data(_message("ceo@forged.test", "bob@local.test"))
    assert code == 550 and text.startswith(b"5.7.1"), (code, text)
    assert b"DMARC" in text


def test_a_passing_message_arrives_with_authentication_results(
    stack_factory, dns_server, make_sink, tmp_path
):
    sink: SmtpSink = make_sink()
    rsa_path, rsa_record, _, _ = _keys(tmp_path)
    dns_server.add("good.test", "TXT", '"v=spf1 ip4:127.0.0.0/8 -all"')
    dns_server.add("_dmarc.good.test", "TXT", '"v=DMARC1; p=reject"')
    dns_server.add("sel._domainkey.good.test", "TXT", _txt(rsa_record))
    stack = stack_factory(
        {
            "server": UNTRUSTED,
            "transport": {"routes": {"gateway.test": f"smtp:[127.0.0.1]:{sink.port}"}},
        }
    )
    body = _message("Ann <ann@good.test>", "inbox@gateway.test")
    signature = dkim.sign(body, b"sel", b"good.test", rsa_path.read_bytes())
    forged = b"Authentication-Results: mx.elemta.test; dkim=pass header.d=bank.test\r\n"
    assert stack.send("ann@good.test", ["inbox@gateway.test"], signature + forged + body)[0] == 250
    (got,) = sink.wait_for(1)
    parsed = email.message_from_bytes(got.content, policy=email.policy.compat32)
    results = parsed.get_all("Authentication-Results")
    assert len(results) == 1, results  # the forged one is gone
    text = " ".join(results[0].split())
    assert text.startswith("mx.elemta.test;")
    assert "spf=pass smtp.mailfrom=ann@good.test" in text
    assert "dkim=pass" in text and "header.d=good.test" in text
    assert "dmarc=pass" in text and "header.from=good.test" in text
    assert parsed["Received-SPF"].startswith("pass")
    assert parsed["DKIM-Signature"] is not None


def test_outbound_mail_is_signed_twice_and_verifies_with_an_independent_verifier(
    stack_factory, make_sink, tmp_path
):
    sink: SmtpSink = make_sink()
    rsa_path, rsa_record, ed_path, ed_record = _keys(tmp_path)
    keys = [
        {
            "domain": "sender.test",
            "selector": "r1",
            "algorithm": "rsa-sha256",
            "key_file": str(rsa_path),
        },
        {
            "domain": "sender.test",
            "selector": "e1",
            "algorithm": "ed25519-sha256",
            "key_file": str(ed_path),
        },
    ]
    stack = stack_factory(
        {
            "policy": {"dkim_keys": keys},
            "transport": {"routes": {"relay.test": f"smtp:[127.0.0.1]:{sink.port}"}},
        }
    )
    body = _message("Sam <sam@sender.test>", "you@relay.test")
    assert stack.send("sam@sender.test", ["you@relay.test"], body)[0] == 250
    (got,) = sink.wait_for(1)
    assert got.content.count(b"DKIM-Signature:") == 2
    records = tmp_path / "records"
    records.mkdir()
    (records / "r1._domainkey.sender.test").write_text(rsa_record)
    (records / "e1._domainkey.sender.test").write_text(ed_record)
    # dkimpy on its own, in another process, with keys read from files
    verifier = (
        "import sys, dkim, pathlib\n"
        "d = pathlib.Path(sys.argv[1])\n"
        "def dns(name, timeout=5):\n"
        "    return (d / name.decode().rstrip('.')).read_bytes()\n"
        "msg = sys.stdin.buffer.read()\n"
        "v = dkim.DKIM(msg)\n"
        "sigs = [h for h in v.headers if h[0].lower() == b'dkim-signature']\n"
        "ok = [v.verify(idx=i, dnsfunc=dns) for i in range(len(sigs))]\n"
        "print(ok)\n"
        "sys.exit(0 if ok and all(ok) else 1)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", verifier, str(records)],
        input=got.content,
        capture_output=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == b"[True, True]"


def test_mail_forwarded_for_a_relay_domain_carries_an_arc_set_that_validates(
    stack_factory, dns_server, make_sink, tmp_path
):
    import asyncio

    from elemta.common.config import DnsSettings
    from elemta.policy.arc import ArcVerifier

    sink: SmtpSink = make_sink()
    rsa_path, rsa_record, _, _ = _keys(tmp_path)
    dns_server.add("arc._domainkey.elemta.test", "TXT", _txt(rsa_record))
    dns_server.add("good.test", "TXT", '"v=spf1 ip4:127.0.0.0/8 -all"')
    stack = stack_factory(
        {
            "server": UNTRUSTED,
            "policy": {
                "arc_seal_domain": "elemta.test",
                "arc_seal_selector": "arc",
                "arc_seal_key_file": str(rsa_path),
            },
            "transport": {"routes": {"gateway.test": f"smtp:[127.0.0.1]:{sink.port}"}},
        }
    )
    body = _message("Ann <ann@good.test>", "inbox@gateway.test")
    assert stack.send("ann@good.test", ["inbox@gateway.test"], body)[0] == 250
    (got,) = sink.wait_for(1)
    assert b"ARC-Seal: i=1;" in got.content
    assert b"ARC-Authentication-Results: i=1; mx.elemta.test;" in got.content
    settings = DnsSettings(nameservers=["127.0.0.1"], port=dns_server.port, timeout=3.0)
    result = asyncio.run(ArcVerifier(settings).verify(got.content))
    assert result.cv == "pass", result
