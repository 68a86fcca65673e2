"""The relay and the chat surface: options and every event field pass through, only models
that declare what a request uses are candidates, and an attempt is committed by its first
output (content, reasoning, a tool call), not by an event that carries nothing yet."""

from __future__ import annotations

import grpc
import pytest

from hybridinference.common.errors import ServiceError
from hybridinference.common.v1 import chat_pb2
from hybridinference.provider.v1 import provider_pb2
from hybridinference.router.v1 import router_pb2
from support.router_fakes import Script, make_relay, make_table, rpc_error, tokens

NO_DEADLINE = lambda: None  # noqa: E731
TOOLS = chat_pb2.ChatOptions(
    tools=[chat_pb2.Tool(type="function", function=chat_pb2.FunctionDefinition(name="f"))]
)
EVERYTHING = {"tools": True, "reasoning": True, "multiple_choices": True}


def request(model: str = "m", **fields: object) -> router_pb2.RouteRequest:
    return router_pb2.RouteRequest(
        request_id="req-1",
        model=model,
        messages=[chat_pb2.ChatMessage(role="user", content="hi")],
        **fields,
    )


async def test_rich_events_pass_through_and_the_options_reach_the_provider() -> None:
    table, stubs = make_table(
        {"w": ["a"]}, {"m": ["a"]}, options={"m": {"capabilities": EVERYTHING}}
    )
    call = chat_pb2.ToolCallDelta(index=0, id="c1", type="function", name="f", arguments="{}")
    events = [
        provider_pb2.GenerateResponse(model="up", reasoning="think"),
        provider_pb2.GenerateResponse(tool_calls=[call]),
        provider_pb2.GenerateResponse(finish_reason=chat_pb2.FINISH_REASON_TOOL_CALLS),
        provider_pb2.GenerateResponse(
            index=1, delta="x", finish_reason=chat_pb2.FINISH_REASON_STOP
        ),
        provider_pb2.GenerateResponse(
            usage=chat_pb2.Usage(completion_tokens=3, reasoning_tokens=1)
        ),
    ]
    stubs["w"].script("a", Script(events=events))
    relay, _ = make_relay(table)

    got = [
        r
        async for r in relay.route(
            request(options=TOOLS, sampling=chat_pb2.SamplingParams(n=2)), NO_DEADLINE
        )
    ]

    assert got[0].reasoning == "think" and got[0].selection.served_model == "up"
    assert list(got[1].tool_calls) == [call]
    assert got[2].finish_reason == chat_pb2.FINISH_REASON_TOOL_CALLS
    assert (got[3].index, got[3].delta, got[3].finish_reason) == (
        1,
        "x",
        chat_pb2.FINISH_REASON_STOP,
    )
    # One completion, on the usage event, with choice 0's finish reason.
    assert [r.HasField("completion") for r in got] == [False, False, False, False, True]
    assert got[-1].completion.finish_reason == chat_pb2.FINISH_REASON_TOOL_CALLS
    assert got[-1].completion.usage.reasoning_tokens == 1
    sent = stubs["w"].calls[0][0]
    assert sent.options == TOOLS and sent.sampling.n == 2


async def test_a_model_without_the_capability_is_refused_naming_the_field() -> None:
    table, stubs = make_table({"w": ["a"]}, {"m": ["a"]})
    relay, _ = make_relay(table)
    with pytest.raises(ServiceError) as caught:
        [r async for r in relay.route(request(options=TOOLS), NO_DEADLINE)]
    assert caught.value.reason == "unsupported_parameter"
    assert caught.value.param == "tools"
    assert stubs["w"].endpoints_called() == []


async def test_fallback_models_without_the_capability_are_skipped() -> None:
    table, stubs = make_table(
        {"w": ["a", "b", "c"]},
        {"m": ["a"], "plain": ["b"], "able": ["c"]},
        options={
            "m": {"capabilities": EVERYTHING, "fallbacks": ["plain", "able"]},
            "able": {"capabilities": EVERYTHING},
        },
    )
    stubs["w"].script("a", Script(events=[], error=rpc_error(grpc.StatusCode.UNAVAILABLE)))
    relay, _ = make_relay(table)

    got = [r async for r in relay.route(request(options=TOOLS), NO_DEADLINE)]

    assert got[0].selection.endpoint == "c"
    assert stubs["w"].endpoints_called() == ["a", "c"]


async def test_an_event_with_nothing_for_the_client_does_not_commit_the_attempt() -> None:
    table, stubs = make_table({"w": ["a"], "v": ["b"]}, {"m": ["a", "b"]})
    stubs["w"].script(
        "a",
        Script(
            events=[provider_pb2.GenerateResponse(model="up-a")],
            error=rpc_error(grpc.StatusCode.UNAVAILABLE, "died before a token"),
        ),
    )
    relay, _ = make_relay(table)

    got = [r async for r in relay.route(request(), NO_DEADLINE)]

    # The failure came before any output, so the request moved on to b.
    assert got[0].selection.endpoint == "b" and got[0].selection.attempts == 2
    assert "".join(r.delta for r in got) == "t0 t1 t2 "


async def test_the_model_name_of_a_held_back_event_is_kept() -> None:
    table, stubs = make_table({"w": ["a"]}, {"m": ["a"]})
    events = [provider_pb2.GenerateResponse(model="up-a"), *tokens(2, model="")]
    stubs["w"].script("a", Script(events=events))
    relay, _ = make_relay(table)

    got = [r async for r in relay.route(request(), NO_DEADLINE)]

    assert got[0].selection.served_model == "up-a" and got[0].delta == "t0 "
