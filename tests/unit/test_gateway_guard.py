"""Every way a request can end leaves its record with the right status: a stream whose consumer
closes it (GeneratorExit, how gRPC ends a server stream a client left) counts as a cancel."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

import grpc

from hybridinference.common.settings import GatewaySettings
from hybridinference.gateway.chat_call import ChatCall
from hybridinference.gateway.execution import Execution
from hybridinference.gateway.runtime import GatewayRuntime


async def test_a_stream_closed_by_its_consumer_is_recorded_as_cancelled() -> None:
    runtime = GatewayRuntime(GatewaySettings())
    recorded: list[Execution] = []
    runtime.record = recorded.append  # type: ignore[method-assign,assignment]
    execution = Execution("req-closed", ChatCall.unparsed(stream=True), "grpc")
    context: Any = None  # never used: nothing is aborted on a cancel

    async def stream() -> AsyncGenerator[int, None]:
        async with runtime.guarded(execution, context):
            for token in range(100):
                execution.streamed_tokens += 1
                yield token

    events = stream()
    assert [await anext(events), await anext(events)] == [0, 1]
    await events.aclose()  # what gRPC does when the client goes away mid-stream

    assert recorded == [execution]
    assert execution.status is grpc.StatusCode.CANCELLED and execution.stream_cut
