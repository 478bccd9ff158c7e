"""A nats-server that demands TLS and credentials, for the services' client side.

Its certificate comes from a test CA (``trustme``); clients authenticate with a
user and password, a token, or a ``.creds`` file. For ``.creds`` the server runs
in operator (JWT) mode: an operator, a system account and an account with
JetStream, whose JWTs this module signs with NKeys as ``nsc`` would.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import nkeys
import trustme

from .dnsserver import free_port
from .natsserver import nats_server_binary
from .processes import stop_process

__all__ = ["SecureNats", "write_pem"]


def write_pem(path: Path, *blobs: Any) -> str:
    path.write_bytes(b"".join(b.bytes() for b in blobs))
    return str(path)


def _keypair(prefix: int) -> nkeys.KeyPair:
    return nkeys.from_seed(bytearray(nkeys.encode_seed(os.urandom(32), prefix)))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _jwt(claims: dict[str, Any], signer: nkeys.KeyPair) -> str:
    header = _b64(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}).encode())
    claims = {**claims, "iat": int(time.time()), "iss": signer.public_key.decode()}
    digest = hashlib.sha256(json.dumps(claims, sort_keys=True).encode()).digest()
    claims["jti"] = base64.b32encode(digest).decode().rstrip("=")
    body = _b64(json.dumps(claims).encode())
    return f"{header}.{body}.{_b64(signer.sign(f'{header}.{body}'.encode()))}"


_UNLIMITED = {k: -1 for k in ("subs", "data", "payload", "imports", "exports", "conn", "leaf")}


class SecureNats:
    """nats-server with TLS (``ca`` signs its certificate) and one kind of auth."""

    def __init__(self, tmp: Path, auth: str, ca: trustme.CA | None = None) -> None:
        self.tmp, self.auth = tmp, auth
        self.ca = ca or trustme.CA()
        self.port = free_port()
        self.user, self.password, self.token = "elemta", "s3cret-pass", "t0ken-value"
        self.creds_file = ""
        self.ca_file = write_pem(tmp / "nats-ca.crt", self.ca.cert_pem)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"tls://localhost:{self.port}"

    def _auth_config(self) -> str:
        if self.auth == "password":
            return f'authorization {{ user: "{self.user}", password: "{self.password}" }}\n'
        if self.auth == "token":
            return f'authorization {{ token: "{self.token}" }}\n'
        op, sys_acc, acc, user = (
            _keypair(nkeys.PREFIX_BYTE_OPERATOR),
            _keypair(nkeys.PREFIX_BYTE_ACCOUNT),
            _keypair(nkeys.PREFIX_BYTE_ACCOUNT),
            _keypair(nkeys.PREFIX_BYTE_USER),
        )
        op_jwt = _jwt(
            {
                "name": "op",
                "sub": op.public_key.decode(),
                "nats": {"type": "operator", "version": 2},
            },
            op,
        )
        sys_jwt = _jwt(
            {
                "name": "SYS",
                "sub": sys_acc.public_key.decode(),
                "nats": {
                    "limits": {**_UNLIMITED, "wildcards": True},
                    "type": "account",
                    "version": 2,
                },
            },
            op,
        )
        js_limits = {"mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1}
        acc_jwt = _jwt(
            {
                "name": "elemta",
                "sub": acc.public_key.decode(),
                "nats": {
                    "limits": {**_UNLIMITED, **js_limits, "wildcards": True},
                    "type": "account",
                    "version": 2,
                },
            },
            op,
        )
        user_jwt = _jwt(
            {
                "name": "svc",
                "sub": user.public_key.decode(),
                "nats": {
                    "pub": {},
                    "sub": {},
                    "subs": -1,
                    "data": -1,
                    "payload": -1,
                    "type": "user",
                    "version": 2,
                },
            },
            acc,
        )
        self.creds_file = str(self.tmp / "elemta.creds")
        Path(self.creds_file).write_text(
            f"-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n"
            f"-----BEGIN USER NKEY SEED-----\n{user.seed.decode()}\n------END USER NKEY SEED------\n"
        )
        return (
            f"operator: {op_jwt}\nsystem_account: {sys_acc.public_key.decode()}\n"
            f"resolver: MEMORY\nresolver_preload: {{\n  {acc.public_key.decode()}: {acc_jwt}\n"
            f"  {sys_acc.public_key.decode()}: {sys_jwt}\n}}\n"
        )

    def start(self) -> None:
        leaf = self.ca.issue_cert("localhost", "127.0.0.1")
        cert = write_pem(self.tmp / "nats.crt", *leaf.cert_chain_pems)
        key = write_pem(self.tmp / "nats.key", leaf.private_key_pem)
        conf = self.tmp / "nats-secure.conf"
        conf.write_text(
            f"listen: 127.0.0.1:{self.port}\n"
            f'jetstream {{ store_dir: "{self.tmp / "js"}", sync_interval: always }}\n'
            f'tls {{ cert_file: "{cert}", key_file: "{key}", timeout: 5 }}\n' + self._auth_config()
        )
        log = open(self.tmp / "nats-secure.log", "ab")  # noqa: SIM115  (kept by the process)
        self.proc = subprocess.Popen(
            [nats_server_binary(), "-c", str(conf)], stdout=log, stderr=log
        )
        deadline = time.monotonic() + 15
        while True:
            assert self.proc.poll() is None, (self.tmp / "nats-secure.log").read_text()[-2000:]
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                assert time.monotonic() < deadline, "nats-server did not start"
                time.sleep(0.05)

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None
