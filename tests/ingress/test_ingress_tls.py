"""Several ingress processes starting at once share one self-signed certificate."""

from __future__ import annotations

import subprocess
import sys

from support.stack import ROOT, python_path

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
            env={"PYTHONPATH": python_path(), "PATH": "/usr/bin:/bin"},
            cwd=ROOT,
        )
        for _ in range(6)
    ]
    results = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0] * 6, [err for _, err in results]
    assert {out.strip() for out, _ in results} == {b"1"}
    assert len(list((tmp_path / "tls").glob("*.pem"))) == 1
