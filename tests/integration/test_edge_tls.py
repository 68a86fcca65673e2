"""TLS and mTLS between two services: the gateway dials a router that requires client certs.

The test makes its own CA, server and client certificates (cryptography); nothing is checked in.
"""

from __future__ import annotations

import datetime
import ipaddress
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc

from hybridinference.common.v1 import chat_pb2
from hybridinference.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from support.procs import ServiceProcess, free_port, start_service, write_config


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _issue(
    subject: str,
    issuer_key: ec.EllipticCurvePrivateKey | None,
    issuer: x509.Certificate | None,
    ca: bool = False,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer.subject if issuer else _name(subject))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    cert = builder.sign(issuer_key or key, hashes.SHA256())
    return key, cert


def _write(
    directory: Path, name: str, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate
) -> None:
    (directory / f"{name}.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    (directory / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("certs")
    ca_key, ca = _issue("hi-test-ca", None, None, ca=True)
    _write(directory, "ca", ca_key, ca)
    _write(directory, "router", *_issue("router", ca_key, ca))
    _write(directory, "gateway", *_issue("gateway", ca_key, ca))
    # A client certificate from a CA the router does not trust.
    other_key, other_ca = _issue("other-ca", None, None, ca=True)
    _write(directory, "stranger", *_issue("stranger", other_key, other_ca))
    return directory


def tls_section(certs: Path, client: str = "gateway") -> dict[str, str]:
    return {
        "cert_file": str(certs / "router.pem"),
        "key_file": str(certs / "router.key"),
        "client_ca_file": str(certs / "ca.pem"),
        "ca_file": str(certs / "ca.pem"),
        "client_cert_file": str(certs / f"{client}.pem"),
        "client_key_file": str(certs / f"{client}.key"),
        "server_name": "localhost",
    }


def credentials(certs: Path, client: str | None) -> grpc.ChannelCredentials:
    root = (certs / "ca.pem").read_bytes()
    if client is None:
        return grpc.ssl_channel_credentials(root)
    return grpc.ssl_channel_credentials(
        root, (certs / f"{client}.key").read_bytes(), (certs / f"{client}.pem").read_bytes()
    )


def wait_tls_healthy(
    address: str, certs: Path, proc: ServiceProcess, timeout_s: float = 30
) -> None:
    deadline = time.monotonic() + timeout_s
    with grpc.secure_channel(address, credentials(certs, "gateway")) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            assert proc.proc.poll() is None, proc.logs()
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=0.5)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            assert time.monotonic() < deadline, proc.logs()
            time.sleep(0.05)


@dataclass
class TlsMesh:
    router: ServiceProcess
    gateway: ServiceProcess


@pytest.fixture(scope="module")
def tls_mesh(certs: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsMesh]:
    tmp = tmp_path_factory.mktemp("tls")
    worker_port, router_port, gateway_port, logger_port = (free_port() for _ in range(4))
    config: dict[str, Any] = {
        "gateway": {"port": gateway_port},
        "router": {"port": router_port, "tls": tls_section(certs)},
        # No logger runs: records are spooled or dropped, which this test does not look at.
        "logger": {"port": logger_port, "sqlite_path": str(tmp / "requests.db")},
        "providers": [
            {
                "name": "sim",
                "port": worker_port,
                "endpoints": [{"id": "sim-a", "model": "hi-sim-1", "sim": {"ttft_ms": 1}}],
            }
        ],
        "models": [{"name": "hi-sim", "endpoints": ["sim-a"]}],
    }
    path = write_config(tmp / "mesh.yaml", config)
    worker = start_service(
        ["hybridinference.providers", "--worker", "sim"],
        path,
        f"127.0.0.1:{worker_port}",
        tmp,
        "sim",
    )
    router = start_service(
        ["hybridinference.router"], path, f"127.0.0.1:{router_port}", tmp, "router", wait=False
    )
    gateway: ServiceProcess | None = None
    try:
        wait_tls_healthy(router.address, certs, router)
        gateway = start_service(
            ["hybridinference.gateway"], path, f"127.0.0.1:{gateway_port}", tmp, "gateway"
        )
        yield TlsMesh(router, gateway)
    finally:
        for proc in (gateway, router, worker):
            if proc is not None:
                proc.stop()


def test_gateway_reaches_the_router_over_mtls(tls_mesh: TlsMesh) -> None:
    with grpc.insecure_channel(tls_mesh.gateway.address) as channel:
        stub = gateway_pb2_grpc.GatewayServiceStub(channel)
        reply = stub.Chat(
            gateway_pb2.ChatRequest(
                model="hi-sim", messages=[chat_pb2.ChatMessage(role="user", content="hi")]
            ),
            timeout=30,
        )
    assert reply.content and reply.endpoint == "sim-a"


def _router_health(address: str, channel: grpc.Channel) -> grpc.StatusCode:
    try:
        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    except grpc.RpcError as error:
        return error.code()
    return grpc.StatusCode.OK


def test_router_refuses_plaintext_and_clients_without_a_trusted_cert(
    tls_mesh: TlsMesh, certs: Path
) -> None:
    address = tls_mesh.router.address
    with grpc.insecure_channel(address) as plaintext:
        assert _router_health(address, plaintext) is grpc.StatusCode.UNAVAILABLE
    options = [("grpc.ssl_target_name_override", "localhost")]
    with grpc.secure_channel(address, credentials(certs, None), options) as no_cert:
        assert _router_health(address, no_cert) is grpc.StatusCode.UNAVAILABLE
    with grpc.secure_channel(address, credentials(certs, "stranger"), options) as stranger:
        assert _router_health(address, stranger) is grpc.StatusCode.UNAVAILABLE
    with grpc.secure_channel(address, credentials(certs, "gateway"), options) as trusted:
        assert _router_health(address, trusted) is grpc.StatusCode.OK
