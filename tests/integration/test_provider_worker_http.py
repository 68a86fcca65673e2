"""A real provider worker process hosting OpenAI-compatible and OpenAI endpoints, in front of
the fake OpenAI API: streaming, the error table through gRPC status details, and a cancelled
gRPC call reaching the upstream."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest

from hybridinference.common.errors import from_rpc_error
from hybridinference.common.v1 import chat_pb2
from hybridinference.provider.v1 import provider_pb2, provider_pb2_grpc
from support.fakes.openai_api import OpenAIFake
from support.polling import until
from support.procs import ServiceProcess, free_port, start_service, write_config

KEY = "sk-worker-test-secret"


@pytest.fixture(scope="module")
def fake() -> Iterator[OpenAIFake]:
    yield from OpenAIFake.running()


@pytest.fixture(scope="module")
def worker(fake: OpenAIFake, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    tmp: Path = tmp_path_factory.mktemp("provider-http-worker")
    port = free_port()
    endpoints = [
        {"id": f"compat-{model}", "model": model, "base_url": fake.base_url}
        for model in ("ok", "long", "status-429")
    ]
    config = {
        "providers": [
            {
                "name": "compat",
                "kind": "openai_compatible",
                "port": port,
                "grace_period_s": 3,
                "endpoints": [{**e, "api_key_env": "WORKER_TEST_KEY"} for e in endpoints],
            }
        ],
        "models": [{"name": "m", "endpoints": ["compat-ok"]}],
    }
    path = write_config(tmp / "mesh.yaml", config)
    service = start_service(
        ["hybridinference.providers", "--worker", "compat"],
        path,
        f"127.0.0.1:{port}",
        tmp,
        "providers-compat",
        env={"WORKER_TEST_KEY": KEY},
    )
    try:
        yield service
    finally:
        service.stop()
        # The key reached the upstream but never the worker's logs.
        assert KEY not in service.logs()


@pytest.fixture
async def stub(worker: ServiceProcess) -> AsyncIterator[provider_pb2_grpc.ProviderServiceStub]:
    async with grpc.aio.insecure_channel(worker.address) as channel:
        yield provider_pb2_grpc.ProviderServiceStub(channel)


def request(endpoint: str, max_tokens: int = 3) -> provider_pb2.GenerateRequest:
    return provider_pb2.GenerateRequest(
        request_id="worker-http",
        endpoint=endpoint,
        messages=[chat_pb2.ChatMessage(role="user", content="hi")],
        sampling=chat_pb2.SamplingParams(max_tokens=max_tokens),
    )


async def test_streams_through_the_worker(
    stub: provider_pb2_grpc.ProviderServiceStub, fake: OpenAIFake
) -> None:
    events = [e async for e in stub.Generate(request("compat-ok"))]
    assert "".join(e.delta for e in events) == "w0 w1 w2"
    assert events[-1].usage.completion_tokens == 3
    assert fake.state.auth_headers[-1] == f"Bearer {KEY}"
    status = await stub.GetStatus(provider_pb2.GetStatusRequest(endpoint="compat-ok"))
    assert status.endpoints[0].healthy
    assert status.endpoints[0].provider == "openai_compatible"


async def test_rate_limit_reaches_the_caller_with_retry_info(
    stub: provider_pb2_grpc.ProviderServiceStub,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in stub.Generate(request("compat-status-429")):
            pass
    error = from_rpc_error(caught.value)
    assert error.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error.reason == "upstream_rate_limited"
    assert error.retry_after_s == 7
    assert error.metadata["retryable"] == "true"


async def test_cancelled_call_disconnects_the_upstream(
    stub: provider_pb2_grpc.ProviderServiceStub, fake: OpenAIFake
) -> None:
    before = fake.state.disconnects
    call = stub.Generate(request("compat-long"))
    await anext(aiter(call))
    call.cancel()
    await until(lambda: fake.state.disconnects > before, 15, "the upstream to see the cancellation")
