"""Services reach NATS over TLS with credentials: a real nats-server that demands both."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import nats
import pytest
import trustme
from nats.errors import Error as NatsError

from elemta.common.natsauth import NatsAuth, NatsTls

from support.natsauth import SecureNats, write_pem


def secure(tmp_path: Path, auth: str) -> Iterator[SecureNats]:
    server = SecureNats(tmp_path, auth)
    server.start()
    yield server
    server.stop()


@pytest.fixture(params=["password", "token", "creds"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SecureNats]:
    yield from secure(tmp_path, request.param)


def auth_for(server: SecureNats, **override: str) -> NatsAuth:
    fields = {"tls_ca": server.ca_file}
    if server.auth == "password":
        fields.update(user=server.user, password=server.password)
    elif server.auth == "token":
        fields["token"] = server.token
    else:
        fields["creds_file"] = server.creds_file
    fields.update(override)
    return NatsAuth(**fields)


async def connect(server: SecureNats, auth: NatsAuth) -> nats.NATS:
    return await nats.connect(
        servers=[server.url],
        tls=NatsTls(auth).context,
        allow_reconnect=False,
        connect_timeout=5,
        **auth.credentials(),
    )


async def test_jetstream_works_over_tls_with_each_kind_of_credentials(server: SecureNats) -> None:
    nc = await connect(server, auth_for(server))
    try:
        js = nc.jetstream()
        await js.add_stream(name="ELEMTA_TLS_TEST", subjects=["elemta.tls.>"])
        ack = await js.publish("elemta.tls.1", b"stored over TLS")
        assert ack.seq == 1
    finally:
        await nc.close()


@pytest.mark.parametrize("kind", ["password", "token"])
async def test_wrong_credentials_are_refused(kind: str, tmp_path: Path) -> None:
    for srv in secure(tmp_path, kind):
        wrong = {"password": "guess"} if kind == "password" else {"token": "guess"}
        with pytest.raises((NatsError, OSError)):
            await connect(srv, auth_for(srv, **wrong))


async def test_a_server_certificate_from_another_ca_is_refused(tmp_path: Path) -> None:
    for srv in secure(tmp_path, "password"):
        other = write_pem(tmp_path / "other-ca.crt", trustme.CA().cert_pem)
        with pytest.raises((NatsError, OSError)):
            await connect(srv, auth_for(srv, tls_ca=other))


async def test_a_renewed_ca_bundle_is_read_again_without_a_restart(tmp_path: Path) -> None:
    # The client trusts an old CA; the server moves to a new one; the mounted CA
    # file is replaced by a bundle of both, as during a CA rotation.
    old, new = trustme.CA(), trustme.CA()
    ca_file = write_pem(tmp_path / "ca.crt", old.cert_pem)
    srv = SecureNats(tmp_path, "password", ca=new)
    srv.start()
    try:
        auth = NatsAuth(tls_ca=ca_file, user=srv.user, password=srv.password)
        tls = NatsTls(auth)
        with pytest.raises((NatsError, OSError)):
            await nats.connect(
                servers=[srv.url], tls=tls.context, allow_reconnect=False, **auth.credentials()
            )
        write_pem(tmp_path / "ca.crt", old.cert_pem, new.cert_pem)
        assert tls.reload_if_changed()
        nc = await nats.connect(
            servers=[srv.url], tls=tls.context, allow_reconnect=False, **auth.credentials()
        )
        await nc.close()
    finally:
        srv.stop()
