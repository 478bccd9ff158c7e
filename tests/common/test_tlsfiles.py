"""TLS from files: mTLS for gRPC, and certificates re-read when the files change."""

from __future__ import annotations

import ssl
from pathlib import Path

import grpc
import pytest
import trustme

from elemta.common.tlsfiles import (
    FileWatch,
    GrpcServerTls,
    client_context,
    grpc_channel_credentials,
    server_context,
)

METHOD = "/elemta.test.Echo/Echo"


def write(tmp: Path, name: str, cert: trustme.LeafCert | None = None, ca: trustme.CA | None = None):
    paths = {}
    if cert is not None:
        (tmp / f"{name}.crt").write_bytes(b"".join(b.bytes() for b in cert.cert_chain_pems))
        (tmp / f"{name}.key").write_bytes(cert.private_key_pem.bytes())
        paths["cert"], paths["key"] = str(tmp / f"{name}.crt"), str(tmp / f"{name}.key")
    if ca is not None:
        (tmp / f"{name}-ca.crt").write_bytes(ca.cert_pem.bytes())
        paths["ca"] = str(tmp / f"{name}-ca.crt")
    return paths


async def start_echo(creds: grpc.ServerCredentials) -> tuple[grpc.aio.Server, int]:
    server = grpc.aio.server()
    handler = grpc.method_handlers_generic_handler(
        "elemta.test.Echo",
        {"Echo": grpc.unary_unary_rpc_method_handler(lambda request, context: request)},
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_secure_port("127.0.0.1:0", creds)
    await server.start()
    return server, port


async def call(port: int, creds: grpc.ChannelCredentials) -> bytes:
    async with grpc.aio.secure_channel(
        f"127.0.0.1:{port}", creds, options=[("grpc.ssl_target_name_override", "policy.test")]
    ) as channel:
        answer: bytes = await channel.unary_unary(METHOD)(b"ping", timeout=10)
        return answer


@pytest.fixture
def pki(tmp_path: Path):
    ca = trustme.CA()
    server = write(tmp_path, "server", ca.issue_cert("policy.test"), ca)
    client = write(tmp_path, "client", ca.issue_cert("ingress.test"), ca)
    return ca, server, client


async def test_grpc_with_client_certificates_accepts_a_client_of_the_same_ca(pki) -> None:
    _, server, client = pki
    srv, port = await start_echo(
        GrpcServerTls(server["cert"], server["key"], server["ca"]).credentials()
    )
    try:
        creds = grpc_channel_credentials(client["ca"], client["cert"], client["key"])
        assert await call(port, creds) == b"ping"
    finally:
        await srv.stop(None)


async def test_grpc_with_client_certificates_refuses_a_client_without_one(pki) -> None:
    _, server, client = pki
    srv, port = await start_echo(
        GrpcServerTls(server["cert"], server["key"], server["ca"]).credentials()
    )
    try:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call(port, grpc_channel_credentials(client["ca"]))
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await srv.stop(None)


async def test_grpc_refuses_a_client_certificate_from_another_ca(pki, tmp_path: Path) -> None:
    _, server, client = pki
    stranger = write(tmp_path, "stranger", trustme.CA().issue_cert("ingress.test"))
    srv, port = await start_echo(
        GrpcServerTls(server["cert"], server["key"], server["ca"]).credentials()
    )
    try:
        with pytest.raises(grpc.aio.AioRpcError):
            await call(
                port, grpc_channel_credentials(client["ca"], stranger["cert"], stranger["key"])
            )
    finally:
        await srv.stop(None)


async def test_grpc_server_presents_a_renewed_certificate_without_restarting(
    pki, tmp_path: Path
) -> None:
    _, server, client = pki
    srv, port = await start_echo(
        GrpcServerTls(server["cert"], server["key"], server["ca"]).credentials()
    )
    try:
        new_ca = trustme.CA()
        trusting_new = write(tmp_path, "new", ca=new_ca)
        creds = grpc_channel_credentials(trusting_new["ca"], client["cert"], client["key"])
        with pytest.raises(grpc.aio.AioRpcError):
            await call(port, creds)  # still the old certificate

        # The files are replaced in place, as a renewed Secret is.
        renewed = new_ca.issue_cert("policy.test")
        write(Path(server["cert"]).parent, "server", renewed)
        assert await call(port, creds) == b"ping"
    finally:
        await srv.stop(None)


def test_file_watch_sees_a_replaced_file_once(tmp_path: Path) -> None:
    path = tmp_path / "tls.crt"
    path.write_text("one")
    watch = FileWatch([str(path)])
    assert not watch.changed()
    (tmp_path / "new").write_text("two, longer")
    (tmp_path / "new").replace(path)
    assert watch.changed()
    assert not watch.changed()


def test_ssl_contexts_verify_both_ways(pki) -> None:
    _, server, client = pki
    srv = server_context(server["cert"], server["key"], client_ca=server["ca"])
    assert srv.verify_mode == ssl.CERT_REQUIRED
    cli = client_context(client["ca"], client["cert"], client["key"])
    assert cli.verify_mode == ssl.CERT_REQUIRED and cli.check_hostname
