"""STARTTLS certificates: one self-signed for processes starting together; a renewed
configured one served without a restart."""

from __future__ import annotations

import smtplib
import ssl
import subprocess
import sys

import trustme
from cryptography import x509

from support.stack import ROOT

LOAD = """
import ssl, sys
from elemta.ingress.tls import self_signed_pem
path = self_signed_pem(sys.argv[1], "mx.elemta.test")
ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
ctx.load_cert_chain(str(path))
print(open(path, "rb").read().count(b"BEGIN CERTIFICATE"))
"""


def test_processes_starting_together_all_load_a_matching_key_and_certificate(tmp_path):
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", LOAD, str(tmp_path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={"PATH": "/usr/bin:/bin"},
            cwd=ROOT,
        )
        for _ in range(6)
    ]
    results = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0] * 6, [err for _, err in results]
    assert {out.strip() for out, _ in results} == {b"1"}
    assert len(list((tmp_path / "tls").glob("*.pem"))) == 1


def _served_certificate(runner, ca) -> x509.Certificate:  # type: ignore[no-untyped-def]
    context = ssl.create_default_context(cadata=ca.cert_pem.bytes().decode())
    with smtplib.SMTP("127.0.0.1", runner.port, local_hostname="client.test", timeout=15) as client:
        client.starttls(context=context)
        der = client.sock.getpeercert(binary_form=True)
    return x509.load_der_x509_certificate(der)


def test_a_renewed_certificate_is_served_without_a_restart(ingress_factory, tmp_path):
    ca = trustme.CA()
    cert_path, key_path = tmp_path / "tls.crt", tmp_path / "tls.key"

    def install(cert) -> None:  # type: ignore[no-untyped-def]
        cert_path.write_bytes(b"".join(b.bytes() for b in cert.cert_chain_pems))
        key_path.write_bytes(cert.private_key_pem.bytes())

    install(ca.issue_cert("mx.elemta.test", "127.0.0.1"))
    runner = ingress_factory({"ingress": {"tls_cert": str(cert_path), "tls_key": str(key_path)}})
    first = _served_certificate(runner, ca).serial_number

    install(ca.issue_cert("mx.elemta.test", "127.0.0.1"))  # the Secret is renewed in place
    # the next handshake looks at the files first: no timer to wait for
    assert _served_certificate(runner, ca).serial_number != first


def test_a_half_written_certificate_keeps_the_old_one_until_it_is_whole(ingress_factory, tmp_path):
    ca = trustme.CA()
    cert_path, key_path = tmp_path / "tls.crt", tmp_path / "tls.key"
    first_cert = ca.issue_cert("mx.elemta.test", "127.0.0.1")
    cert_path.write_bytes(first_cert.cert_chain_pems[0].bytes())
    key_path.write_bytes(first_cert.private_key_pem.bytes())
    runner = ingress_factory({"ingress": {"tls_cert": str(cert_path), "tls_key": str(key_path)}})
    first = _served_certificate(runner, ca).serial_number
    renewed = ca.issue_cert("mx.elemta.test", "127.0.0.1")
    cert_path.write_bytes(renewed.cert_chain_pems[0].bytes())  # the key is not there yet
    assert _served_certificate(runner, ca).serial_number == first
    key_path.write_bytes(renewed.private_key_pem.bytes())
    assert _served_certificate(runner, ca).serial_number != first
