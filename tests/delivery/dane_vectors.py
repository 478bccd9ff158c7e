"""OpenSSL's DANE test vectors (test/danetest.in), read as OpenSSL's danetest.c reads them.

Each case: a header ``<nTLSA> <nCerts> <nonamechecks> <want_verify> <want_depth>``,
the TLSA records, then the chain in PEM, leaf first. The base domain is
``example.com``; ``danetest.pem`` is the PKIX trust store; danetest.c prefers
SHA2-256 over SHA2-512 for digest agility.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from elemta.delivery.dane import FULL, SHA256, SHA512, Tlsa

DATA = Path(__file__).parent.parent / "data" / "dane"
BASE_DOMAIN = "example.com"
# SSL_CTX_dane_mtype_set(ctx, EVP_sha512(), 2, 1) and (EVP_sha256(), 1, 2)
DIGEST_ORDER = {FULL: 0, SHA512: 1, SHA256: 2}

_PEM = re.compile(r"-----BEGIN CERTIFICATE-----(.*?)-----END CERTIFICATE-----", re.S)


@dataclass
class Case:
    number: int
    comment: str
    records: list[Tlsa]
    chain: list[bytes]
    ee_namechecks: bool
    want_error: int
    want_depth: int


def anchors() -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates((DATA / "danetest.pem").read_bytes())


def cases() -> list[Case]:
    lines = (DATA / "danetest.in").read_text().splitlines()
    out: list[Case] = []
    i = 0
    comment: list[str] = []
    while i < len(lines):
        line = lines[i].strip()
        i += 1
        if not line or line.startswith("#"):
            if line.startswith("# ") and not line[2:].isdigit():
                comment.append(line[2:])
            elif not line:
                comment = []
            continue
        ntlsa, ncert, noncheck, want, depth = (int(x) for x in line.split())
        records = [Tlsa.parse(lines[i + k]) for k in range(ntlsa)]
        i += ntlsa
        chain: list[bytes] = []
        while len(chain) < ncert:
            block = []
            while "-----END CERTIFICATE-----" not in lines[i]:
                block.append(lines[i])
                i += 1
            block.append(lines[i])
            i += 1
            body = _PEM.search("\n".join(block))
            assert body is not None
            chain.append(base64.b64decode("".join(body.group(1).split())))
        out.append(Case(len(out) + 1, " ".join(comment), records, chain, not noncheck, want, depth))
        comment = []
    return out
