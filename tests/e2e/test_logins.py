"""Logins through the running policy service: users made with ``elemta user``,
checked with the ``Authenticate`` RPC (as ingress and the api ask), locked out
after repeated failures."""

from __future__ import annotations

import subprocess

import grpc

from elemta.rpc.policy.v1 import policy_pb2 as pb
from elemta.rpc.policy.v1 import policy_pb2_grpc as pb_grpc

from support.stack import ELEMTA, Stack


def user_command(stack: Stack, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [ELEMTA, "user", *args, "--config", str(stack.config_path)],
        input=stdin,
        capture_output=True,
        text=True,
        env=stack.env(),
        timeout=60,
    )


def authenticate(stack: Stack, login: str, password: str, ip: str) -> pb.AuthenticateResponse:
    with grpc.insecure_channel(f"127.0.0.1:{stack.policy_port}") as channel:
        stub = pb_grpc.PolicyServiceStub(channel)
        request = pb.AuthenticateRequest(
            login=login, password=password, client_ip=ip, service="api"
        )
        return stub.Authenticate(request, timeout=20)  # type: ignore[no-any-return]


def test_a_user_added_with_the_command_logs_in_with_its_roles_and_addresses(stack_factory):
    stack = stack_factory(start=False).start("policy")
    added = user_command(stack, "add", "alice@local.test", "--password-stdin", "--role", "user",
                         "--role", "admin", stdin="correct horse\n")  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert user_command(stack, "address", "add", "alice@local.test", "@alias.test").returncode == 0
    listed = user_command(stack, "list")
    assert listed.stdout == "alice@local.test\tadmin,user\t@alias.test,alice@local.test\n"
    assert "correct horse" not in listed.stdout

    ok = authenticate(stack, "alice@local.test", "correct horse", "192.0.2.1")
    assert ok.result == pb.AUTH_RESULT_OK
    assert ok.user.login == "alice@local.test"
    assert list(ok.user.roles) == ["admin", "user"]
    assert list(ok.user.addresses) == ["@alias.test", "alice@local.test"]

    assert user_command(stack, "passwd", "alice@local.test", "--password-stdin",
                        stdin="battery staple\n").returncode == 0  # fmt: skip
    changed = authenticate(stack, "alice@local.test", "correct horse", "192.0.2.1")
    assert changed.result == pb.AUTH_RESULT_INVALID
    assert authenticate(stack, "alice@local.test", "battery staple", "192.0.2.1").result == 1
    assert user_command(stack, "remove", "alice@local.test").returncode == 0
    gone = authenticate(stack, "alice@local.test", "battery staple", "192.0.2.1")
    assert gone.result == pb.AUTH_RESULT_INVALID
    again = user_command(stack, "remove", "alice@local.test")
    assert again.returncode == 1 and "no such user" in again.stderr


RIGHT, WRONG = "R1ght-Passw0rd", "Wr0ng-Passw0rd"


def test_repeated_failures_lock_out_the_client_and_the_login(stack_factory):
    stack = stack_factory({"users": {"lockout_failures": 3}}, start=False).start("policy")
    add = user_command(stack, "add", "bob@local.test", "--password-stdin", stdin=RIGHT + "\n")
    assert add.returncode == 0, add.stderr
    for n in (1, 2, 3):
        reply = authenticate(stack, "bob@local.test", WRONG, "192.0.2.7")
        assert (reply.result, reply.failures) == (pb.AUTH_RESULT_INVALID, n)
    # the right password no longer helps, from this address or any other
    locked = authenticate(stack, "bob@local.test", RIGHT, "192.0.2.7")
    assert locked.result == pb.AUTH_RESULT_LOCKED and 0 < locked.retry_after <= 900
    assert authenticate(stack, "bob@local.test", RIGHT, "198.51.100.9").result == 3
    # the guessing address is locked out for other logins too
    other = authenticate(stack, "carol@local.test", "x", "192.0.2.7")
    assert other.result == pb.AUTH_RESULT_LOCKED
    text = "".join(p.read_text() for p in stack.workdir.glob("policy-*.log"))
    assert "authentication failed: service=api client=192.0.2.7 login=bob@local.test" in text
    assert "reason=locked" in text
    assert WRONG not in text and RIGHT not in text  # passwords are never logged
