"""A mail program's side of submission, for the end-to-end tests: users made with
``elemta user``, a TLS client that takes the stack's self-signed certificate,
AUTH PLAIN's initial response."""

from __future__ import annotations

import base64
import ssl
import subprocess

from .stack import ELEMTA, Stack

__all__ = ["PASSWORD", "add_user", "plain", "tls_client"]

PASSWORD = "S3cret-submission"


def tls_client() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the stack's self-signed certificate
    return ctx


def add_user(stack: Stack, login: str, *addresses: str) -> None:
    def run(*args: str, stdin: str = "") -> None:
        proc = subprocess.run(
            [ELEMTA, "user", *args, "--config", str(stack.config_path)],
            input=stdin, capture_output=True, text=True, env=stack.env(), timeout=60,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr

    run("add", login, "--password-stdin", stdin=PASSWORD + "\n")
    for address in addresses:
        run("address", "add", login, address)


def plain(login: str, password: str) -> str:
    return base64.b64encode(f"\0{login}\0{password}".encode()).decode()
