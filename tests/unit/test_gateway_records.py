"""The request record of a stream that failed part way says so, and how much was sent."""

from __future__ import annotations

import grpc

from hybridinference.common.errors import ServiceError
from hybridinference.gateway.chat_call import ChatCall
from hybridinference.gateway.execution import Execution
from hybridinference.gateway.records import STREAM_CUT_PREFIX, build_record


def _execution(tokens: int) -> Execution:
    execution = Execution("req-cut", ChatCall.unparsed(stream=True), "openai")
    execution.streamed_tokens = tokens
    return execution


def test_a_stream_cut_after_tokens_is_recorded_as_cut() -> None:
    execution = _execution(3)
    execution.fail(ServiceError(grpc.StatusCode.UNAVAILABLE, "Stream removed (Socket closed)"))
    record = build_record(execution)
    assert record.status == "UNAVAILABLE"
    assert record.error.startswith(f"{STREAM_CUT_PREFIX} 3 tokens: ")
    assert record.usage.completion_tokens == 3


def test_a_failure_before_any_token_is_not_a_cut() -> None:
    execution = _execution(0)
    execution.fail(ServiceError(grpc.StatusCode.UNAVAILABLE, "no endpoint"))
    record = build_record(execution)
    assert not execution.stream_cut
    assert record.error == "no endpoint"
    assert record.usage.completion_tokens == 0


def test_a_complete_stream_is_not_a_cut() -> None:
    execution = _execution(12)
    assert not execution.stream_cut
    assert build_record(execution).error == ""
