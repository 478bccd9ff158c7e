"""TLS levels per listener, scanned with a real TLS scanner (sslyze, installed by
``make test``), and a certificate replaced on disk served to the next connection."""

from __future__ import annotations

import json
import os
import shutil
import smtplib
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
import trustme

from support.dnsserver import free_port

SSLYZE = shutil.which("sslyze", path=str(Path(sys.executable).parent))
VERSIONS = {
    "tls_1_0_cipher_suites": "TLSv1.0",
    "tls_1_1_cipher_suites": "TLSv1.1",
    "tls_1_2_cipher_suites": "TLSv1.2",
    "tls_1_3_cipher_suites": "TLSv1.3",
}


def scan(port: int, starttls: bool, workdir: Path) -> dict[str, set[str]]:
    """Protocol version -> cipher suites the listener accepted."""
    assert SSLYZE, "sslyze is missing: make test installs it (make tls-tools)"
    out = workdir / f"scan-{port}.json"
    args = [SSLYZE, "--tlsv1", "--tlsv1_1", "--tlsv1_2", "--tlsv1_3", "--json_out", str(out)]
    if starttls:
        args += ["--starttls", "smtp"]
    proc = subprocess.run([*args, f"127.0.0.1:{port}"], capture_output=True, text=True, timeout=300)
    assert out.exists(), proc.stdout + proc.stderr
    result = json.loads(out.read_text())["server_scan_results"][0]
    assert result["scan_status"] == "COMPLETED", result
    found: dict[str, set[str]] = {}
    for key, version in VERSIONS.items():
        accepted = result["scan_result"][key]["result"]["accepted_cipher_suites"]
        found[version] = {c["cipher_suite"]["name"] for c in accepted}
    return found


@pytest.fixture
def rsa_cert(tmp_path: Path) -> tuple[Path, Path, trustme.CA]:
    ca = trustme.CA(key_type=trustme.KeyType.RSA)
    leaf = ca.issue_cert("mx.elemta.test", key_type=trustme.KeyType.RSA)
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    return cert, key, ca


def test_each_tls_level_offers_its_protocols_and_ciphers(stack_factory, rsa_cert, tmp_path):
    cert, key, _ = rsa_cert
    ports = {level: free_port() for level in ("recommended", "strict", "maximum")}
    stack = stack_factory(
        {
            "ingress": {
                "tls_cert": str(cert),
                "tls_key": str(key),
                "tls_level": "minimum",
                "listeners": [
                    {"address": f"127.0.0.1:{ports['recommended']}", "role": "submission"},
                    {
                        "address": f"127.0.0.1:{ports['strict']}",
                        "role": "submission",
                        "tls_level": "strict",
                    },
                    {
                        "address": f"127.0.0.1:{ports['maximum']}",
                        "role": "submissions",
                        "tls_level": "maximum",
                    },
                ],
            }
        },
        start=False,
    ).start("queue", "ingress")
    tls13 = {"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"}

    minimum = scan(stack.smtp_port, True, tmp_path)
    assert minimum["TLSv1.0"] and minimum["TLSv1.1"], minimum  # old peers still get TLS
    assert "TLS_RSA_WITH_AES_128_CBC_SHA" in minimum["TLSv1.0"]  # RSA key exchange
    assert "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA" in minimum["TLSv1.0"]
    assert minimum["TLSv1.3"] == tls13

    recommended = scan(ports["recommended"], True, tmp_path)
    assert not recommended["TLSv1.0"] and not recommended["TLSv1.1"]
    assert recommended["TLSv1.2"] and recommended["TLSv1.3"] == tls13
    for suite in recommended["TLSv1.2"]:
        assert suite.startswith(("TLS_ECDHE_", "TLS_DHE_")), suite  # forward secrecy
        assert "GCM" in suite or "CHACHA20" in suite, suite  # AEAD only

    strict = scan(ports["strict"], True, tmp_path)
    assert not strict["TLSv1.0"] and not strict["TLSv1.1"]
    assert strict["TLSv1.2"] == {
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
    }

    maximum = scan(ports["maximum"], False, tmp_path)  # implicit TLS
    assert maximum == {"TLSv1.0": set(), "TLSv1.1": set(), "TLSv1.2": set(), "TLSv1.3": tls13}

    metrics = stack.processes["ingress"].metrics()
    assert 'elemta_ingress_tls_handshakes_total{cipher="TLS_AES_256_GCM_SHA384"' in metrics
    assert "elemta_ingress_tls_certificate_days_left{" in metrics


def served_serial(port: int, implicit: bool) -> int:
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    if implicit:
        with socket.create_connection(("127.0.0.1", port), timeout=20) as raw:
            with ctx.wrap_socket(raw) as tls:
                der = tls.getpeercert(binary_form=True)
    else:
        with smtplib.SMTP("127.0.0.1", port, local_hostname="client.test", timeout=20) as s:
            s.starttls(context=ctx)
            der = s.sock.getpeercert(binary_form=True)  # type: ignore[union-attr]
    from cryptography import x509

    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def test_a_replaced_certificate_is_served_to_the_next_connection(stack_factory, rsa_cert):
    cert, key, ca = rsa_cert
    stack = stack_factory(
        {"ingress": {"tls_cert": str(cert), "tls_key": str(key)}}, start=False
    ).start("queue", "ingress")
    first = served_serial(stack.smtp_port, implicit=False)
    assert served_serial(stack.submissions_port, implicit=True) == first
    renewed = ca.issue_cert("mx.elemta.test", key_type=trustme.KeyType.RSA)
    # as cert-manager renews a Secret: new files, moved into place
    for path, pem in ((key, renewed.private_key_pem), (cert, renewed.cert_chain_pems[0])):
        tmp = path.with_suffix(".new")
        pem.write_to_path(str(tmp))
        os.replace(tmp, path)
    second = served_serial(stack.smtp_port, implicit=False)
    assert second != first
    assert served_serial(stack.submissions_port, implicit=True) == second
    assert served_serial(stack.submission_port, implicit=False) == second
