"""The relay: model resolution, pinning, fallback before the first token, none after, costs."""

from __future__ import annotations

import asyncio
import functools

import grpc
import pytest

from hybridinference.common.errors import FieldViolation, ServiceError, invalid_argument
from hybridinference.common.v1 import chat_pb2
from hybridinference.router.relay import Relay
from hybridinference.router.v1 import router_pb2
from support.router_fakes import Script, Sleeps, make_relay, make_table, rpc_error, tokens

NO_DEADLINE = lambda: None  # noqa: E731


def request(model: str = "m", **fields: object) -> router_pb2.RouteRequest:
    return router_pb2.RouteRequest(
        request_id="req-1",
        model=model,
        messages=[chat_pb2.ChatMessage(role="user", content="hi")],
        **fields,
    )


async def collect(
    relay: Relay, req: router_pb2.RouteRequest, remaining: object = NO_DEADLINE
) -> list[router_pb2.RouteResponse]:
    return [r async for r in relay.route(req, remaining)]


async def collect_until_error(
    relay: Relay, req: router_pb2.RouteRequest
) -> tuple[list[router_pb2.RouteResponse], ServiceError]:
    got: list[router_pb2.RouteResponse] = []
    with pytest.raises(ServiceError) as caught:
        async for response in relay.route(req, NO_DEADLINE):
            got.append(response)
    return got, caught.value


async def test_stream_carries_selection_first_and_completion_last() -> None:
    table, stubs = make_table({"w": ["a"]}, {"m": ["a"]}, prices={"a": (1.0, 2.0)})
    stubs["w"].script("a", Script(events=tokens(3, model="served-a", prompt_tokens=1000)))
    # A clock that stands still: the attempt starts when the request arrived (queued 0 ms).
    relay, _ = make_relay(table, clock=lambda: 100.0)

    responses = await collect(relay, request())

    assert "".join(r.delta for r in responses) == "t0 t1 t2 "
    assert [r.HasField("selection") for r in responses] == [True, False, False]
    assert [r.HasField("completion") for r in responses] == [False, False, True]
    assert responses[0].selection == router_pb2.Selection(
        endpoint="a", provider="sim", served_model="served-a", attempts=1
    )
    completion = responses[-1].completion
    assert completion.usage.completion_tokens == 3
    assert completion.finish_reason == chat_pb2.FINISH_REASON_STOP
    # (1000 prompt * $1 + 3 completion * $2) per million tokens.
    assert completion.cost_usd == pytest.approx(0.001006)
    sent, timeout, _ = stubs["w"].calls[0]
    assert (sent.request_id, sent.endpoint, sent.messages[0].content) == ("req-1", "a", "hi")
    assert timeout is None
    a = table.endpoints["a"]
    assert (a.requests_total, a.failures_total, a.in_flight) == (1, 0, 0)


async def test_single_event_stream_carries_selection_and_completion_together() -> None:
    table, stubs = make_table({"w": ["a"]}, {"m": ["a"]})
    stubs["w"].script("a", Script(events=tokens(1)))
    relay, _ = make_relay(table)
    [only] = await collect(relay, request())
    assert only.HasField("selection") and only.HasField("completion") and only.delta == "t0 "


async def test_stream_without_final_event_still_gets_one_completion() -> None:
    table, stubs = make_table({"w": ["a"]}, {"m": ["a"]})
    stubs["w"].script("a", Script(events=[]))
    relay, _ = make_relay(table)
    [only] = await collect(relay, request())
    assert only.selection.served_model == "a-model"
    assert only.HasField("completion") and only.completion.cost_usd == 0.0


async def test_cost_uses_endpoint_prices_per_million_tokens() -> None:
    table, _ = make_table({"w": ["a"]}, {"m": ["a"]}, prices={"a": (0.5, 1.5)})
    usage = chat_pb2.Usage(prompt_tokens=2_000_000, completion_tokens=1_000_000)
    assert table.endpoints["a"].cost_usd(usage) == pytest.approx(2.5)
    assert table.endpoints["a"].cost_usd(chat_pb2.Usage()) == 0.0


async def test_round_robin_spreads_requests() -> None:
    table, stubs = make_table({"w": ["a", "b"]}, {"m": ["a", "b"]})
    relay, _ = make_relay(table)
    for _ in range(4):
        await collect(relay, request())
    assert stubs["w"].endpoints_called() == ["a", "b", "a", "b"]


@pytest.mark.parametrize(
    "code",
    [
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
    ],
)
async def test_transient_failure_before_first_token_falls_back(code: grpc.StatusCode) -> None:
    table, stubs = make_table({"w": ["a"], "v": ["b"]}, {"m": ["a", "b"]})
    stubs["w"].script("a", Script(events=[], error=rpc_error(code)))
    relay, _ = make_relay(table)

    responses = await collect(relay, request())

    assert responses[0].selection.endpoint == "b"
    assert responses[0].selection.attempts == 2
    assert responses[-1].HasField("completion")
    a, b = table.endpoints["a"], table.endpoints["b"]
    assert (a.requests_total, a.failures_total, a.in_flight) == (1, 1, 0)
    assert (b.requests_total, b.failures_total, b.in_flight) == (1, 0, 0)


async def test_client_error_is_returned_without_fallback() -> None:
    table, stubs = make_table({"w": ["a", "b"]}, {"m": ["a", "b"]})
    rich = invalid_argument([FieldViolation("sampling.max_tokens", "too large")])
    stubs["w"].script(
        "a",
        Script(
            events=[], error=rpc_error(grpc.StatusCode.INVALID_ARGUMENT, rich.message, rich=rich)
        ),
    )
    relay, _ = make_relay(table)

    got, error = await collect_until_error(relay, request())

    assert got == []
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.violations == [FieldViolation("sampling.max_tokens", "too large")]
    assert error.reason == "invalid_request"
    assert stubs["w"].endpoints_called() == ["a"]


async def test_failure_after_first_token_is_passed_through_without_retry() -> None:
    table, stubs = make_table({"w": ["a", "b"]}, {"m": ["a", "b"]})
    stubs["w"].script(
        "a",
        Script(
            events=tokens(3)[:2],
            error=rpc_error(grpc.StatusCode.UNAVAILABLE, "sim: aborted after 2 tokens"),
        ),
    )
    relay, _ = make_relay(table)

    got, error = await collect_until_error(relay, request())

    assert [r.delta for r in got] == ["t0 ", "t1 "]
    assert got[0].selection.endpoint == "a"
    assert not any(r.HasField("completion") for r in got)
    assert error.code == grpc.StatusCode.UNAVAILABLE
    assert error.message == "sim: aborted after 2 tokens"
    assert stubs["w"].endpoints_called() == ["a"]
    assert table.endpoints["a"].failures_total == 1


async def test_all_candidates_failing_gives_no_healthy_endpoint() -> None:
    table, stubs = make_table({"w": ["a", "b"]}, {"m": ["a", "b"]})
    stubs["w"].script("a", Script(events=[], error=rpc_error(grpc.StatusCode.UNAVAILABLE, "x")))
    stubs["w"].script("b", Script(events=[], error=rpc_error(grpc.StatusCode.INTERNAL, "y")))
    relay, _ = make_relay(table)

    _, error = await collect_until_error(relay, request())

    assert error.code == grpc.StatusCode.UNAVAILABLE
    assert error.reason == "no_healthy_endpoint"
    assert "2 attempt(s)" in error.message
    # Endpoint ids and upstream details stay in the logs, out of the client's message.
    assert error.message.endswith("after 2 attempt(s): UNAVAILABLE; INTERNAL")


async def test_every_candidate_rate_limited_is_resource_exhausted_with_a_hint() -> None:
    table, stubs = make_table({"w": ["a", "b"]}, {"m": ["a", "b"]})
    limited = ServiceError(grpc.StatusCode.RESOURCE_EXHAUSTED, "slow down", retry_after_s=7.0)
    for endpoint in ("a", "b"):
        stubs["w"].script(
            endpoint,
            Script(
                events=[],
                error=rpc_error(grpc.StatusCode.RESOURCE_EXHAUSTED, "slow down", rich=limited),
            ),
        )
    relay, _ = make_relay(table)

    _, error = await collect_until_error(relay, request())

    assert error.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error.reason == "rate_limited" and error.http_status == 429
    assert error.retry_after_s == 7.0


async def test_unhealthy_endpoints_are_skipped_but_tried_when_all_are_down() -> None:
    table, stubs = make_table({"w": ["a", "b"]}, {"m": ["a", "b"]})
    relay, _ = make_relay(table)
    table.endpoints["a"].healthy = False
    for _ in range(3):
        await collect(relay, request())
    assert stubs["w"].endpoints_called() == ["b", "b", "b"]

    table.endpoints["b"].healthy = False
    stubs["w"].calls.clear()
    responses = await collect(relay, request())
    assert len(stubs["w"].calls) == 1 and responses[-1].HasField("completion")


async def test_connection_failure_marks_worker_unhealthy_for_next_requests() -> None:
    table, stubs = make_table({"w": ["a", "a2"], "v": ["b"]}, {"m": ["a", "a2", "b"]})
    refused = rpc_error(grpc.StatusCode.UNAVAILABLE, "failed to connect to all addresses")
    stubs["w"].script("a", Script(events=[], error=refused))
    relay, _ = make_relay(table)

    responses = await collect(relay, request())

    # a's failure took its sibling a2 down too, so the fallback went straight to b.
    assert responses[0].selection.endpoint == "b"
    assert responses[0].selection.attempts == 2
    assert stubs["w"].endpoints_called() == ["a"]
    assert not table.endpoints["a2"].healthy


async def test_unknown_model_is_not_found_and_lists_known_models() -> None:
    table, _ = make_table({"w": ["a"]}, {"m": ["a"], "n": ["a"]})
    relay, _ = make_relay(table)
    _, error = await collect_until_error(relay, request("nope"))
    assert error.code == grpc.StatusCode.NOT_FOUND
    assert error.reason == "model_not_found"
    assert "'nope'" in error.message and "m, n" in error.message


async def test_pinned_endpoint_is_used_alone_even_when_unhealthy() -> None:
    table, stubs = make_table({"w": ["a", "b"]}, {"m": ["a", "b"]})
    table.endpoints["b"].healthy = False
    relay, _ = make_relay(table)
    responses = await collect(relay, request(pinned_endpoint="b"))
    assert responses[0].selection.endpoint == "b"

    stubs["w"].script(
        "b", Script(events=[], error=rpc_error(grpc.StatusCode.RESOURCE_EXHAUSTED, "slow down"))
    )
    _, error = await collect_until_error(relay, request(pinned_endpoint="b"))
    # No fallback: the pinned endpoint's own status comes back.
    assert error.code == grpc.StatusCode.RESOURCE_EXHAUSTED and error.message == "slow down"
    assert stubs["w"].endpoints_called() == ["b", "b"]


async def test_pinned_endpoint_outside_the_model_is_invalid_argument() -> None:
    table, stubs = make_table({"w": ["a", "b"]}, {"m": ["a"]})
    relay, _ = make_relay(table)
    _, error = await collect_until_error(relay, request(pinned_endpoint="b"))
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in error.violations] == ["pinned_endpoint"]
    assert stubs["w"].calls == []


async def test_deadline_is_passed_on_and_an_expired_one_stops_fallback() -> None:
    table, stubs = make_table({"w": ["a", "b"]}, {"m": ["a", "b"]})
    relay, _ = make_relay(table)
    await collect(relay, request(), lambda: 4.5)
    assert stubs["w"].calls[0][1] == 4.5

    remaining = iter([2.0, 0.0])
    stubs["w"].script("b", Script(events=[], error=rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED)))
    with pytest.raises(ServiceError) as caught:
        await collect(relay, request(), lambda: next(remaining))
    assert caught.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert len(stubs["w"].calls) == 2


async def test_closing_the_stream_cancels_the_provider_call() -> None:
    table, stubs = make_table({"w": ["a"]}, {"m": ["a"]})
    stubs["w"].script("a", Script(events=tokens(2)[:1], hang=True))
    relay, _ = make_relay(table)
    stream = relay.route(request(), NO_DEADLINE)
    first = await anext(stream)
    assert first.selection.endpoint == "a"
    assert table.endpoints["a"].in_flight == 1
    await stream.aclose()
    _, _, call = stubs["w"].calls[0]
    assert call.cancelled
    assert table.endpoints["a"].in_flight == 0


async def test_task_cancellation_while_waiting_cancels_the_provider_call() -> None:
    table, stubs = make_table({"w": ["a"]}, {"m": ["a"]})
    stubs["w"].script("a", Script(events=[], hang=True))
    relay, _ = make_relay(table)
    task = asyncio.create_task(collect(relay, request()))
    await asyncio.wait_for(stubs["w"].hanging.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert stubs["w"].calls[0][2].cancelled
    assert table.endpoints["a"].in_flight == 0
    assert table.endpoints["a"].failures_total == 0


async def test_unary_route_merges_the_providers_whole_reply_once() -> None:
    table, stubs = make_table({"w": ["a"]}, {"m": ["a"]}, prices={"a": (1.0, 2.0)})
    stubs["w"].script("a", Script(events=tokens(3, model="served-a", prompt_tokens=1000)))
    relay, _ = make_relay(table, clock=lambda: 100.0)

    reply = await relay.route_unary(request(), NO_DEADLINE)

    assert reply.content == "t0 t1 t2 "
    assert reply.selection == router_pb2.Selection(
        endpoint="a", provider="sim", served_model="served-a", attempts=1
    )
    assert reply.completion.usage.completion_tokens == 3
    assert reply.completion.finish_reason == chat_pb2.FINISH_REASON_STOP
    assert reply.completion.cost_usd == pytest.approx(0.001006)
    a = table.endpoints["a"]
    assert (a.requests_total, a.failures_total, a.in_flight) == (1, 0, 0)
    # A whole reply's time is no time to first token.
    assert len(a.stats.ttft_window) == 0


async def test_unary_route_falls_back_before_the_reply() -> None:
    table, stubs = make_table({"w": ["a"], "v": ["b"]}, {"m": ["a", "b"]})
    stubs["w"].script("a", Script(events=[], error=rpc_error(grpc.StatusCode.UNAVAILABLE)))
    relay, _ = make_relay(table)

    reply = await relay.route_unary(request(), NO_DEADLINE)

    assert (reply.selection.endpoint, reply.selection.attempts) == ("b", 2)
    assert reply.content == "t0 t1 t2 "
    assert table.endpoints["a"].failures_total == 1


async def test_unary_route_cancelled_while_waiting_cancels_the_provider_call() -> None:
    table, stubs = make_table({"w": ["a"]}, {"m": ["a"]})
    stubs["w"].script("a", Script(events=[], hang=True))
    relay, _ = make_relay(table)
    task = asyncio.create_task(relay.route_unary(request(), NO_DEADLINE))
    await asyncio.wait_for(stubs["w"].hanging.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert stubs["w"].calls[0][2].cancelled
    assert table.endpoints["a"].in_flight == 0


async def test_the_serving_attempt_reports_how_long_the_request_waited_at_the_router() -> None:
    """queued_ms runs from the request's arrival to the start of the attempt that served it:
    here a failed first attempt and the retry's backoff (the fake clock moves only in sleeps)."""
    table, stubs = make_table({"w": ["a", "b"]}, {"m": ["a", "b"]})
    now = [100.0]

    class AdvancingSleeps(Sleeps):
        async def __call__(self, seconds: float) -> None:
            await super().__call__(seconds)
            now[0] += seconds

    sleeps = AdvancingSleeps()
    relay, _ = make_relay(table, clock=lambda: now[0], sleeps=sleeps)
    # Round robin tries a first; it fails and b serves.
    stubs["w"].script("a", Script(events=[], error=rpc_error(grpc.StatusCode.UNAVAILABLE)))
    stubs["w"].script("b", Script(events=tokens(2)))

    responses = await collect(relay, request())

    selection = responses[0].selection
    assert (selection.endpoint, selection.attempts) == ("b", 2)
    assert sleeps.delays and selection.queued_ms == pytest.approx(sum(sleeps.delays) * 1000)


async def test_the_callers_own_deadline_never_counts_against_the_endpoint() -> None:
    table, stubs = make_table({"w": ["a"]}, {"m": ["a"]})
    relay, _ = make_relay(table)
    endpoint = table.endpoints["a"]
    for _ in range(endpoint.breaker.failure_threshold * 3):
        stubs["w"].script(
            "a", Script(events=[], error=rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED))
        )
        remaining = iter([0.05, 0.0])
        # (The caller is gone by then; what it is told does not matter here.)
        with pytest.raises(ServiceError):
            await collect(relay, request(), functools.partial(next, remaining, 0.0))
    assert endpoint.breaker.closed and endpoint.breaker.consecutive_failures == 0
    assert endpoint.failures_total == 0
