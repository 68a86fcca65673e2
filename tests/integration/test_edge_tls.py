"""mTLS on every internal channel: gateway→router, router→provider worker, gateway→logger.

Each service requires client certificates signed by the mesh CA; plaintext, a client without a
certificate and one signed by another CA are refused. The certificates come from support/certs.py
(`make certs`); nothing is checked in.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from hybridinference.common.v1 import chat_pb2
from hybridinference.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from hybridinference.logger.v1 import logger_pb2, logger_pb2_grpc
from support.certs import issue, make_certs, write
from support.mesh import mesh_config, running_mesh
from support.polling import poll
from support.procs import ServiceProcess, free_port, start_service, write_config


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("certs")
    make_certs(directory, ["router", "gateway", "logger", "sim", "operator"], days=1)
    # A client certificate from a CA the services do not trust.
    write(directory, "stranger", *issue("stranger", issue("other-ca", ca=True), days=1))
    return directory


def tls_section(certs: Path, client: str = "gateway", server: str = "router") -> dict[str, str]:
    """mTLS for ``server``: its certificate, clients must be signed by the CA, and the
    certificate its dialer (``client``) presents."""
    return {
        "cert_file": str(certs / f"{server}.pem"),
        "key_file": str(certs / f"{server}.key"),
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
    with grpc.secure_channel(address, credentials(certs, "operator")) as channel:
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
    worker: ServiceProcess
    logger: ServiceProcess


@pytest.fixture(scope="module")
def tls_mesh(certs: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsMesh]:
    """Every internal channel on mTLS: gateway→router, router→worker, gateway→logger."""
    tmp = tmp_path_factory.mktemp("tls")
    worker_port, router_port, gateway_port, logger_port = (free_port() for _ in range(4))
    config: dict[str, Any] = {
        "gateway": {"port": gateway_port, "log_flush_interval_s": 0.02},
        "router": {"port": router_port, "tls": tls_section(certs, "gateway", "router")},
        "logger": {
            "port": logger_port,
            "sqlite_path": str(tmp / "requests.db"),
            "tls": tls_section(certs, "gateway", "logger"),
        },
        "providers": [
            {
                "name": "sim",
                "port": worker_port,
                "tls": tls_section(certs, "router", "sim"),
                "endpoints": [{"id": "sim-a", "model": "hi-sim-1", "sim": {"ttft_ms": 1}}],
            }
        ],
        "models": [{"name": "hi-sim", "endpoints": ["sim-a"]}],
    }
    path = write_config(tmp / "mesh.yaml", config)
    started: list[ServiceProcess] = []

    def start(module: list[str], port: int, name: str) -> ServiceProcess:
        proc = start_service(module, path, f"127.0.0.1:{port}", tmp, name, wait=False)
        started.append(proc)
        wait_tls_healthy(proc.address, certs, proc)
        return proc

    try:
        worker = start(["hybridinference.providers", "--worker", "sim"], worker_port, "sim")
        logger = start(["hybridinference.logger"], logger_port, "logger")
        router = start(["hybridinference.router"], router_port, "router")
        gateway = start_service(
            ["hybridinference.gateway"], path, f"127.0.0.1:{gateway_port}", tmp, "gateway"
        )
        started.append(gateway)
        yield TlsMesh(router, gateway, worker, logger)
    finally:
        for proc in reversed(started):
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


def _health(address: str, channel: grpc.Channel) -> grpc.StatusCode:
    try:
        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    except grpc.RpcError as error:
        return error.code()
    return grpc.StatusCode.OK


@pytest.mark.parametrize("service", ["router", "worker", "logger"])
def test_internal_services_refuse_plaintext_and_clients_without_a_trusted_cert(
    tls_mesh: TlsMesh, certs: Path, service: str
) -> None:
    address = getattr(tls_mesh, service).address
    with grpc.insecure_channel(address) as plaintext:
        assert _health(address, plaintext) is grpc.StatusCode.UNAVAILABLE
    options = [("grpc.ssl_target_name_override", "localhost")]
    with grpc.secure_channel(address, credentials(certs, None), options) as no_cert:
        assert _health(address, no_cert) is grpc.StatusCode.UNAVAILABLE
    with grpc.secure_channel(address, credentials(certs, "stranger"), options) as stranger:
        assert _health(address, stranger) is grpc.StatusCode.UNAVAILABLE
    with grpc.secure_channel(address, credentials(certs, "gateway"), options) as trusted:
        assert _health(address, trusted) is grpc.StatusCode.OK


def _record(
    stub: logger_pb2_grpc.LoggerServiceStub, client_id: str
) -> logger_pb2.RequestRecord | None:
    """The record of the request the caller sent with x-request-id ``client_id``, once stored
    (records are keyed by an id of the gateway's; the caller's is a column of its own)."""
    reply = stub.ListRecords(logger_pb2.ListRecordsRequest(client_request_id=client_id), timeout=5)
    return reply.records[0] if reply.records else None


def test_records_reach_the_logger_over_mtls_and_only_trusted_callers_read_them(
    tls_mesh: TlsMesh, certs: Path
) -> None:
    with grpc.insecure_channel(tls_mesh.gateway.address) as channel:
        call = gateway_pb2_grpc.GatewayServiceStub(channel).Chat.with_call(
            gateway_pb2.ChatRequest(
                model="hi-sim", messages=[chat_pb2.ChatMessage(role="user", content="hi")]
            ),
            timeout=30,
        )
    request_id = dict(call[1].trailing_metadata())["x-request-id"]
    address = tls_mesh.logger.address

    with grpc.secure_channel(address, credentials(certs, "operator")) as trusted:
        record = poll(
            lambda: _record(logger_pb2_grpc.LoggerServiceStub(trusted), request_id),
            15,
            "the record over mTLS",
        )
    assert record.endpoint == "sim-a"
    # Writes and lists refuse callers without a trusted certificate: the handshake fails.
    for client in (None, "stranger"):
        with grpc.secure_channel(address, credentials(certs, client)) as untrusted:
            stub = logger_pb2_grpc.LoggerServiceStub(untrusted)
            with pytest.raises(grpc.RpcError) as listed:
                stub.ListRecords(logger_pb2.ListRecordsRequest(), timeout=5)
            assert listed.value.code() is grpc.StatusCode.UNAVAILABLE
            with pytest.raises(grpc.RpcError) as written:
                stub.WriteRecords(logger_pb2.WriteRecordsRequest(), timeout=5)
            assert written.value.code() is grpc.StatusCode.UNAVAILABLE


def test_the_launcher_runs_a_mesh_with_every_internal_channel_on_mtls(
    certs: Path, tmp_path: Path
) -> None:
    """`make up` with mTLS on the router, the worker and the logger: the launcher polls their
    health over mTLS, and a request through Envoy is served and recorded."""
    config = mesh_config(tmp_path)
    config["router"]["tls"] = tls_section(certs, "gateway", "router")
    config["logger"]["tls"] = tls_section(certs, "gateway", "logger")
    config["providers"][0]["tls"] = tls_section(certs, "router", "sim")
    with running_mesh(tmp_path, config) as mesh:
        reply = httpx.post(
            f"{mesh.http_url}/v1/chat/completions",
            json={"model": "hi-sim", "messages": [{"role": "user", "content": "hi"}]},
            timeout=30,
        )
        assert reply.status_code == 200, reply.text
        request_id = reply.headers["x-request-id"]
        with grpc.secure_channel(mesh.address("logger"), credentials(certs, "operator")) as ch:
            stub = logger_pb2_grpc.LoggerServiceStub(ch)

            record = poll(lambda: _record(stub, request_id), 15, "the record over mTLS")
            assert record.endpoint == "sim-a"
