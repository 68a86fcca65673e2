"""The provider worker as a real process: streaming, status, errors, cancellation and shutdown."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from hybridinference.common.errors import from_rpc_error
from hybridinference.common.v1 import chat_pb2
from hybridinference.provider.v1 import provider_pb2, provider_pb2_grpc
from hybridinference.providers.sim import count_prompt_tokens, sim_tokens
from support.polling import until
from support.procs import REPO, ServiceProcess, free_port, start_service, write_config

MESSAGES = [chat_pb2.ChatMessage(role="user", content="hello provider worker")]


def mesh_config(port: int, grace_s: float = 10.0) -> dict[str, Any]:
    return {
        "providers": [
            {
                "name": "sim",
                "port": port,
                "grace_period_s": grace_s,
                "endpoints": [
                    {
                        "id": "fast",
                        "model": "hi-sim-fast",
                        "sim": {"ttft_ms": 5, "itl_ms": 2, "output_tokens": 8},
                    },
                    # Long enough that a test can act mid-stream: 40 tokens, 100 ms apart.
                    {
                        "id": "slow",
                        "model": "hi-sim-slow",
                        "sim": {"ttft_ms": 10, "itl_ms": 100, "output_tokens": 40},
                    },
                    {"id": "broken", "model": "hi-sim-fast", "sim": {"fail_rate": 1.0}},
                    {
                        "id": "aborting",
                        "model": "hi-sim-fast",
                        "sim": {"itl_ms": 1, "output_tokens": 10, "abort_after_tokens": 2},
                    },
                ],
            }
        ],
        "models": [{"name": "hi-sim", "endpoints": ["fast", "slow"]}],
    }


def start_worker(tmp: Path, grace_s: float = 10.0) -> ServiceProcess:
    port = free_port()
    config = write_config(tmp / "mesh.yaml", mesh_config(port, grace_s))
    return start_service(
        ["hybridinference.providers", "--worker", "sim"],
        config,
        f"127.0.0.1:{port}",
        tmp,
        "providers-sim",
    )


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    service = start_worker(tmp_path_factory.mktemp("provider-worker"))
    try:
        yield service
    finally:
        assert service.stop() == 0, service.logs()


@pytest.fixture
async def stub(worker: ServiceProcess) -> AsyncIterator[provider_pb2_grpc.ProviderServiceAsyncStub]:
    async with grpc.aio.insecure_channel(worker.address) as channel:
        yield provider_pb2_grpc.ProviderServiceStub(channel)  # type: ignore[misc]


def generate_request(
    endpoint: str, request_id: str = "req-it", **sampling: Any
) -> provider_pb2.GenerateRequest:
    return provider_pb2.GenerateRequest(
        request_id=request_id,
        endpoint=endpoint,
        messages=MESSAGES,
        sampling=chat_pb2.SamplingParams(**sampling),
    )


async def status_of(
    stub: provider_pb2_grpc.ProviderServiceAsyncStub, endpoint: str
) -> provider_pb2.EndpointStatus:
    reply: provider_pb2.GetStatusResponse = await stub.GetStatus(
        provider_pb2.GetStatusRequest(endpoint=endpoint)
    )
    (status,) = reply.endpoints
    return status


async def test_stream_and_usage(stub: provider_pb2_grpc.ProviderServiceAsyncStub) -> None:
    before = await status_of(stub, "fast")
    events = [event async for event in stub.Generate(generate_request("fast"))]
    *tokens, final = events
    assert tokens[0].model == "hi-sim-fast"
    assert "".join(t.delta for t in tokens) == "".join(sim_tokens(MESSAGES, 8))
    assert final.finish_reason == chat_pb2.FINISH_REASON_STOP
    assert final.usage.completion_tokens == len(tokens) == 8
    assert final.usage.prompt_tokens == count_prompt_tokens(MESSAGES)
    assert final.usage.total_tokens == final.usage.prompt_tokens + 8
    after = await status_of(stub, "fast")
    assert after.completed_total == before.completed_total + 1
    assert after.running == 0


async def test_max_tokens_over_the_wire(stub: provider_pb2_grpc.ProviderServiceAsyncStub) -> None:
    events = [event async for event in stub.Generate(generate_request("fast", max_tokens=3))]
    assert events[-1].finish_reason == chat_pb2.FINISH_REASON_LENGTH
    assert events[-1].usage.completion_tokens == len(events) - 1 == 3


async def test_unknown_endpoint_is_not_found(
    stub: provider_pb2_grpc.ProviderServiceAsyncStub,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for _ in stub.Generate(generate_request("missing")):
            pass
    error = from_rpc_error(info.value)
    assert error.code == grpc.StatusCode.NOT_FOUND
    assert error.reason == "endpoint_not_found"
    assert "missing" in error.message
    with pytest.raises(grpc.aio.AioRpcError) as status_info:
        await stub.GetStatus(provider_pb2.GetStatusRequest(endpoint="missing"))
    assert from_rpc_error(status_info.value).reason == "endpoint_not_found"


async def test_get_status(stub: provider_pb2_grpc.ProviderServiceAsyncStub) -> None:
    reply = await stub.GetStatus(provider_pb2.GetStatusRequest())
    by_id = {status.endpoint: status for status in reply.endpoints}
    assert list(by_id) == ["fast", "slow", "broken", "aborting"]
    slow = by_id["slow"]
    assert (slow.provider, slow.model, slow.healthy) == ("sim", "hi-sim-slow", True)


async def test_injected_failures_are_unavailable(
    stub: provider_pb2_grpc.ProviderServiceAsyncStub,
) -> None:
    before = await status_of(stub, "broken")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for _ in stub.Generate(generate_request("broken")):
            raise AssertionError("no event expected before the failure")
    error = from_rpc_error(info.value)
    assert (error.code, error.reason) == (grpc.StatusCode.UNAVAILABLE, "injected_failure")
    assert (await status_of(stub, "broken")).failed_total == before.failed_total + 1

    received = []
    with pytest.raises(grpc.aio.AioRpcError) as abort_info:
        async for event in stub.Generate(generate_request("aborting")):
            received.append(event)
    assert len(received) == 2
    assert from_rpc_error(abort_info.value).reason == "injected_abort"


async def test_client_cancel_cancels_generation(
    worker: ServiceProcess, stub: provider_pb2_grpc.ProviderServiceAsyncStub
) -> None:
    before = await status_of(stub, "slow")
    call = stub.Generate(generate_request("slow", request_id="req-cancel-me"))
    await call.read()
    await call.read()
    assert (await status_of(stub, "slow")).running == before.running + 1
    call.cancel()

    async def cancelled() -> bool:
        status = await status_of(stub, "slow")
        return status.cancelled_total == before.cancelled_total + 1 and status.running == 0

    await until(cancelled, 1.0, "cancelled_total incremented")

    async def logged() -> bool:
        return any(
            '"generation cancelled"' in line and '"req-cancel-me"' in line
            for line in worker.logs().splitlines()
        )

    await until(logged, 1.0, "'generation cancelled' logged with the request id")
    assert (await status_of(stub, "slow")).completed_total == before.completed_total


async def test_deadline_mid_stream(stub: provider_pb2_grpc.ProviderServiceAsyncStub) -> None:
    before = await status_of(stub, "slow")
    received = []
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for event in stub.Generate(generate_request("slow"), timeout=0.35):
            received.append(event)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert 1 <= len(received) < 40

    async def cancelled() -> bool:
        status = await status_of(stub, "slow")
        return status.cancelled_total == before.cancelled_total + 1 and status.running == 0

    await until(cancelled, 1.0, "deadline counted as a cancellation")


async def test_sigterm_lets_inflight_stream_finish(tmp_path: Path) -> None:
    service = start_worker(tmp_path, grace_s=10.0)
    try:
        async with grpc.aio.insecure_channel(service.address) as channel:
            stub = provider_pb2_grpc.ProviderServiceStub(channel)
            call = stub.Generate(generate_request("slow", max_tokens=12))
            first = await call.read()
            assert first.model == "hi-sim-slow"
            service.proc.send_signal(signal.SIGTERM)
            rest = []
            # read() until EOF: the iterator and read() may not be mixed on one call.
            while (event := await call.read()) is not grpc.aio.EOF:
                rest.append(event)
            assert await call.code() == grpc.StatusCode.OK
            assert rest[-1].usage.completion_tokens == 12
            assert rest[-1].finish_reason == chat_pb2.FINISH_REASON_LENGTH
        assert await asyncio.to_thread(service.proc.wait, 10) == 0
        assert '"draining"' in service.logs()
    finally:
        service.stop(signal.SIGKILL)


def test_unknown_worker_name_exits_2(tmp_path: Path) -> None:
    config = write_config(tmp_path / "mesh.yaml", mesh_config(free_port()))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "hybridinference.providers",
            "--worker",
            "nope",
            "--config",
            str(config),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "unknown worker 'nope'" in result.stderr
    assert "valid workers: sim" in result.stderr


def test_second_worker_on_a_taken_port_exits_instead_of_sharing_it(
    worker: ServiceProcess, tmp_path: Path
) -> None:
    """Without SO_REUSEPORT a port conflict fails at startup; the running worker keeps its port."""
    port = int(worker.address.rsplit(":", 1)[1])
    config = write_config(tmp_path / "mesh.yaml", mesh_config(port))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "hybridinference.providers",
            "--worker",
            "sim",
            "--config",
            str(config),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert worker.proc.poll() is None
