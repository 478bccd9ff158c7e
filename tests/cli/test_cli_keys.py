"""``elemta key`` and ``elemta audit`` against a running api service: the first key
straight into NATS (--bootstrap), then keys created, listed and revoked through the
API, the audit log; errors are one line and a non-zero exit status."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.apiserver import ApiProcess
from support.dnsserver import free_port
from support.natsserver import NatsServer
from support.stack import ELEMTA


@pytest.fixture(scope="module")
def running_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiProcess]:
    workdir = tmp_path_factory.mktemp("cli-keys")
    server = NatsServer(workdir / "nats")
    server.start()
    api = ApiProcess(workdir, server.url).start()
    yield api
    api.stop()
    server.stop()


def elemta(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("ELEMTA_")}
    base["HOME"] = env.pop("HOME", base.get("HOME", "/nonexistent"))
    return subprocess.run(
        [ELEMTA, *args], env=base | env, capture_output=True, text=True, timeout=60
    )


def test_the_first_admin_key_comes_from_nats_then_keys_are_managed_through_the_api(
    running_api: ApiProcess,
) -> None:
    boot = elemta(
        "key",
        "create",
        "--bootstrap",
        "--role",
        "admin",
        "--label",
        "ops",
        env={"ELEMTA_NATS_URL": running_api.nats_url},
    )
    assert boot.returncode == 0, boot.stderr
    admin = boot.stdout.strip()
    assert admin.startswith("elemta_")
    env = {"ELEMTA_API_URL": running_api.url, "ELEMTA_API_KEY": admin}

    made = elemta(
        "key",
        "create",
        "--role",
        "user",
        "--label",
        "carol",
        "--address",
        "carol@example.org",
        "--expires",
        "30d",
        env=dict(env),
    )
    assert made.returncode == 0, made.stderr
    user_token = made.stdout.strip()
    key_id = user_token.split("_")[1]

    listed = elemta("key", "list", env=dict(env))
    assert listed.returncode == 0, listed.stderr
    line = next(x for x in listed.stdout.splitlines() if x.startswith(key_id))
    assert "user" in line and "carol" in line
    assert user_token not in listed.stdout and admin not in listed.stdout

    revoked = elemta("key", "revoke", key_id, env=dict(env))
    assert revoked.returncode == 0 and key_id in revoked.stdout
    assert key_id not in elemta("key", "list", env=dict(env)).stdout

    audit = elemta("audit", "-n", "3", env=dict(env))
    assert audit.returncode == 0, audit.stderr
    lines = audit.stdout.splitlines()
    assert f"key.revoke {key_id}" in lines[0] and "ops (admin)" in lines[0]
    assert f"key.create {key_id}" in lines[1]
    assert "elemta key create --bootstrap" in lines[2]


def test_a_revoked_or_missing_key_is_one_line_and_exit_1(
    running_api: ApiProcess, tmp_path: Path
) -> None:
    env = {"ELEMTA_API_URL": running_api.url, "HOME": str(tmp_path)}
    missing = elemta("key", "list", env=dict(env))
    assert missing.returncode == 1
    assert missing.stderr.count("\n") == 1 and "no API key" in missing.stderr
    bad = elemta("key", "list", env=dict(env, ELEMTA_API_KEY="elemta_000000000000_" + "A" * 43))
    assert bad.returncode == 1
    assert bad.stderr.strip().startswith("elemta: 401 Unauthorized:")
    assert bad.stderr.count("\n") == 1
    low = elemta("key", "list", env=dict(env, ELEMTA_API_KEY=running_api.tokens["operator"]))
    assert low.returncode == 1 and "403 Forbidden" in low.stderr


def test_the_key_and_url_come_from_the_config_file_and_an_unreachable_api_is_exit_69(
    running_api: ApiProcess, tmp_path: Path
) -> None:
    conf = tmp_path / "cli.toml"
    conf.write_text(f'url = "{running_api.url}"\nkey = "{running_api.tokens["admin"]}"\n')
    ok = elemta("key", "list", env={"ELEMTA_CLI_CONFIG": str(conf)})
    assert ok.returncode == 0, ok.stderr
    down = elemta(
        "key",
        "list",
        "--api-url",
        f"http://127.0.0.1:{free_port()}",
        env={"ELEMTA_CLI_CONFIG": str(conf)},
    )
    assert down.returncode == 69
    assert down.stderr.startswith("elemta: cannot reach the API")
