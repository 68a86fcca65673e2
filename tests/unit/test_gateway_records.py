"""The request record of a stream that failed part way says so, and how much was sent; a stream
that ended before its completion is charged for the output it streamed."""

from __future__ import annotations

from pathlib import Path

import grpc

from hybridinference.common.errors import ServiceError
from hybridinference.common.settings import MeshSettings
from hybridinference.gateway.chat_call import ChatCall
from hybridinference.gateway.execution import Execution
from hybridinference.gateway.partial_usage import complete_partial, output_prices
from hybridinference.gateway.records import STREAM_CUT_PREFIX, build_record
from hybridinference.router.v1 import router_pb2
from support.mesh import mesh_config


def _execution(tokens: int) -> Execution:
    execution = Execution("req-cut", ChatCall.unparsed(stream=True), "openai")
    execution.streamed_tokens = tokens
    return execution


def test_a_stream_cut_after_tokens_is_recorded_as_cut() -> None:
    execution = _execution(3)
    execution.fail(ServiceError(grpc.StatusCode.UNAVAILABLE, "Stream removed (Socket closed)"))
    complete_partial(execution, {})
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


def test_an_abandoned_stream_is_charged_for_what_it_streamed_at_its_endpoints_price() -> None:
    execution = _execution(40)
    execution.selection = router_pb2.Selection(endpoint="cloud", attempts=1)
    execution.fail(ServiceError(grpc.StatusCode.CANCELLED, "client cancelled"))
    complete_partial(execution, {"cloud": 10.0, "local": 0.0})
    assert execution.completion is not None
    assert execution.completion.usage.completion_tokens == 40
    assert execution.completion.usage.total_tokens == 40
    # 40 tokens at $10 per million: what the quota settle and the record both charge.
    assert execution.completion.cost_usd == 40 * 10.0 / 1_000_000
    record = build_record(execution)
    assert record.status == "CANCELLED" and record.cost_usd == execution.completion.cost_usd


def test_a_completion_from_the_router_is_kept_and_silence_charges_nothing() -> None:
    finished = _execution(5)
    finished.completion = router_pb2.Completion(cost_usd=0.5)
    complete_partial(finished, {"": 99.0})
    assert finished.completion.cost_usd == 0.5
    silent = _execution(0)
    complete_partial(silent, {"": 99.0})
    assert silent.completion is None


def test_output_prices_come_from_every_endpoint_of_the_mesh_config(tmp_path: Path) -> None:
    config = mesh_config(tmp_path)
    config["providers"][0]["endpoints"][0]["price_completion_per_1m"] = 2.5
    prices = output_prices(MeshSettings.model_validate(config))
    endpoint = config["providers"][0]["endpoints"][0]["id"]
    assert prices[endpoint] == 2.5 and len(prices) >= 3
