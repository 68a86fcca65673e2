"""Pure pieces of the provider adapters: SSE parsing, the error table, key pools, vLLM metrics."""

from __future__ import annotations

import grpc
import pytest

from hybridinference.common.errors import ServiceError
from hybridinference.common.settings import ConfigError
from hybridinference.common.v1 import chat_pb2
from hybridinference.provider.v1 import provider_pb2
from hybridinference.providers import upstream_errors as ue
from hybridinference.providers.keys import KeyPool, key_env_names, read_keys, with_key_rotation
from hybridinference.providers.openai_wire import MalformedChunk, StreamAssembler, merge_events
from hybridinference.providers.sse import SseParser
from hybridinference.providers.vllm_metrics import HitRateWindow, parse_load


def test_sse_events_across_arbitrary_read_boundaries() -> None:
    stream = (
        b'data: {"a":1}\n\n: keep-alive\n\ndata: {"b":2}\r\n\r\n'
        b"data: x\ndata: y\n\ndata: [DONE]\n\n"
    )
    for size in (1, 2, 3, 7, len(stream)):
        parser = SseParser()
        events: list[bytes] = []
        for start in range(0, len(stream), size):
            events += parser.feed(stream[start : start + size])
        events += parser.finish()
        assert events == [b'{"a":1}', b'{"b":2}', b"x\ny", b"[DONE]"], size


def test_sse_bare_cr_line_ends_and_unterminated_last_event() -> None:
    parser = SseParser()
    assert parser.feed(b"data: one\r\rdata:two") == [b"one"]
    assert parser.finish() == [b"two"]


def test_error_table_by_status_and_class() -> None:
    assert ue.failure_for_status(429).code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert ue.failure_for_status(401).code == grpc.StatusCode.UNAVAILABLE
    assert ue.failure_for_status(400).retryable is False
    assert ue.failure_for_status(418).code == grpc.StatusCode.INVALID_ARGUMENT
    assert ue.failure_for_status(599).code == grpc.StatusCode.UNAVAILABLE


def test_retry_after_forms() -> None:
    assert ue.parse_retry_after({"Retry-After": "3"}) == 3
    assert ue.parse_retry_after({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    assert (
        ue.parse_retry_after({"Retry-After": "Wed, 21 Oct 2015 07:28:10 GMT"}, now=1445412480) == 10
    )
    assert ue.parse_retry_after({"Retry-After": "soon"}) is None
    assert ue.parse_retry_after(None) is None


def test_http_error_carries_retry_info_and_retryable_flag() -> None:
    error = ue.http_error("ep", 429, "slow down", {"Retry-After": "2"})
    assert error.retry_after_s == 2
    assert ue.retryable(error)
    status = error.to_status()
    assert status.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert not ue.retryable(ue.http_error("ep", 400, "bad"))


def test_redact_hides_keys() -> None:
    assert ue.redact("Incorrect API key provided: sk-abc123", ["sk-abc123"]) == (
        "Incorrect API key provided: ***"
    )


def test_key_pool_round_robin_cooldown_and_exhaustion() -> None:
    now = [100.0]
    pool = KeyPool("ep", ["a", "b"], cooldown_s=20, clock=lambda: now[0])
    assert [pool.acquire(), pool.acquire(), pool.acquire()] == ["a", "b", "a"]
    pool.cool_down("a", retry_after_s=None)
    assert [pool.acquire(), pool.acquire()] == ["b", "b"]
    pool.cool_down("b", retry_after_s=5)
    with pytest.raises(Exception) as caught:
        pool.acquire()
    assert getattr(caught.value, "retry_after_s", None) == 5
    now[0] += 5
    assert pool.acquire() == "b"
    now[0] += 15
    assert pool.usable() == 2


async def test_key_rotation_rests_rejected_keys_and_passes_other_errors() -> None:
    pool = KeyPool("ep", ["a", "b", "c"], cooldown_s=20, clock=lambda: 100.0)
    tried: list[str | None] = []

    async def rejects(status: int, accept: str) -> str:
        async def call(key: str | None) -> str:
            tried.append(key)
            if key != accept:
                raise ue.http_error("ep", status, "no", {"Retry-After": "3"})
            return f"ok with {key}"

        return await with_key_rotation(pool, "ep", call)

    assert await rejects(429, "b") == "ok with b"
    assert tried == ["a", "b"] and pool.usable() == 2
    # A 500 is the request's failure, not the key's: no rotation, no rest.
    tried.clear()
    with pytest.raises(ServiceError) as caught:
        await rejects(500, "none")
    assert tried == ["c"] and caught.value.code == grpc.StatusCode.UNAVAILABLE
    assert pool.usable() == 2
    # Without a pool: one call, no key.
    assert await with_key_rotation(None, "ep", lambda key: _echo(key)) == "None"


async def _echo(key: str | None) -> str:
    return str(key)


def test_keys_come_from_named_variables_only() -> None:
    assert key_env_names("") == []
    assert key_env_names(["A", "", "B"]) == ["A", "B"]
    assert read_keys("ep", ["A"], {"A": " sk-1 "}) == ["sk-1"]
    with pytest.raises(ConfigError, match="MISSING") as caught:
        read_keys("ep", ["MISSING"], {})
    assert "sk-" not in str(caught.value)


def _events(assembler: StreamAssembler, chunk: object) -> list[provider_pb2.GenerateResponse]:
    out: list[provider_pb2.GenerateResponse] = []
    assembler.chunk(chunk, out)
    return out


def test_stream_assembler_contract() -> None:
    assembler = StreamAssembler("m")
    assert _events(assembler, {"choices": [{"delta": {"role": "assistant", "content": ""}}]}) == []
    [first] = _events(assembler, {"choices": [{"delta": {"content": "Hi"}}]})
    assert first.model == "m"
    [second] = _events(
        assembler, {"choices": [{"delta": {"content": "!"}, "finish_reason": "length"}]}
    )
    assert not second.model
    _events(assembler, {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}})
    [final] = assembler.final()
    assert final.finish_reason == chat_pb2.FINISH_REASON_LENGTH
    assert (final.usage.prompt_tokens, final.usage.completion_tokens, final.usage.total_tokens) == (
        3,
        2,
        5,
    )


def test_stream_assembler_relays_tools_reasoning_logprobs_and_choices() -> None:
    assembler = StreamAssembler("m")
    [thinking] = _events(
        assembler, {"choices": [{"index": 0, "delta": {"reasoning_content": "hm"}}]}
    )
    assert thinking.reasoning == "hm" and thinking.model == "m" and assembler.deltas == 1
    calls = {
        "tool_calls": [
            {
                "index": 0,
                "id": "c1",
                "type": "function",
                "function": {"name": "f", "arguments": ""},
            },
            {"index": 1, "id": "c2", "type": "function", "function": {"name": "g"}},
        ]
    }
    [call] = _events(assembler, {"choices": [{"index": 0, "delta": calls}]})
    assert [(c.index, c.id, c.name) for c in call.tool_calls] == [(0, "c1", "f"), (1, "c2", "g")]
    lp = {"content": [{"token": "a", "logprob": -0.5, "bytes": [97], "top_logprobs": []}]}
    both = _events(
        assembler,
        {
            "choices": [
                {
                    "index": 0,
                    "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]},
                },
                {"index": 1, "delta": {"content": "a"}, "logprobs": lp, "finish_reason": "stop"},
            ]
        },
    )
    assert [e.index for e in both] == [0, 1]
    assert both[0].tool_calls[0].arguments == "{}"
    assert both[1].logprobs.content[0].bytes == b"a"
    _events(
        assembler,
        {
            "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}],
            "usage": {
                "prompt_tokens": 3,
                "completion_tokens": 9,
                "prompt_tokens_details": {"cached_tokens": 2},
                "completion_tokens_details": {"reasoning_tokens": 4},
            },
        },
    )
    first, last = assembler.final()
    assert (first.index, first.finish_reason) == (0, chat_pb2.FINISH_REASON_TOOL_CALLS)
    assert (last.index, last.finish_reason) == (1, chat_pb2.FINISH_REASON_STOP)
    assert last.usage.reasoning_tokens == 4 and last.usage.cached_tokens == 2


def test_merge_events_joins_one_choices_fragments() -> None:
    events = [
        provider_pb2.GenerateResponse(delta="a", model="m"),
        provider_pb2.GenerateResponse(
            tool_calls=[chat_pb2.ToolCallDelta(index=0, id="c", name="f", arguments="{")]
        ),
        provider_pb2.GenerateResponse(tool_calls=[chat_pb2.ToolCallDelta(index=0, arguments="}")]),
        provider_pb2.GenerateResponse(index=1, delta="b"),
    ]
    merged = merge_events(events)
    assert len(merged) == 2 and merged[0].model == "m" and merged[0].delta == "a"
    assert [(c.id, c.arguments) for c in merged[0].tool_calls] == [("c", "{}")]


def test_stream_assembler_counts_chunks_without_usage_and_rejects_garbage() -> None:
    assembler = StreamAssembler("m")
    _events(assembler, {"choices": [{"delta": {"content": "a"}, "finish_reason": "stop"}]})
    assert assembler.final()[-1].usage.completion_tokens == 1
    bad: object
    for bad in (
        [],
        {"choices": "x"},
        {"choices": [{"delta": {"content": 3}}]},
        {"usage": {"x": 1}},
    ):
        with pytest.raises(MalformedChunk):
            _events(StreamAssembler("m"), bad)


METRICS = """# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="tiny"} 2.0
vllm:num_requests_waiting{engine="0",model_name="tiny"} 5.0
vllm:kv_cache_usage_perc{engine="0",model_name="tiny"} 0.25
vllm:prefix_cache_queries_total{engine="0",model_name="tiny"} 100.0
vllm:prefix_cache_hits_total{engine="0",model_name="tiny"} 40.0
vllm:request_success_total{engine="0",finished_reason="abort",model_name="tiny"} 3.0
vllm:request_success_total{engine="0",finished_reason="stop",model_name="tiny"} 7.0
"""


def test_vllm_metrics_parse() -> None:
    load = parse_load(METRICS)
    assert (load.running, load.waiting, load.kv_cache_usage) == (2, 5, 0.25)
    assert load.prefix_cache_hit_rate == 0.4
    assert load.aborted_total == 3
    assert parse_load("").running == 0


def test_hit_rate_window_uses_the_interval() -> None:
    window = HitRateWindow()
    assert window.update(parse_load(METRICS)) == 0.4
    later = METRICS.replace(
        'queries_total{engine="0",model_name="tiny"} 100.0',
        'queries_total{engine="0",model_name="tiny"} 200.0',
    )
    later = later.replace(
        'hits_total{engine="0",model_name="tiny"} 40.0',
        'hits_total{engine="0",model_name="tiny"} 130.0',
    )
    assert window.update(parse_load(later)) == 0.9
    # No new lookups: the last rate stands.
    assert window.update(parse_load(later)) == 0.9


def test_default_max_tokens_goes_upstream_only_without_a_client_limit() -> None:
    from hybridinference.providers.sampling import sampling_options

    assert sampling_options(chat_pb2.SamplingParams(default_max_tokens=300)) == {"max_tokens": 300}
    assert sampling_options(chat_pb2.SamplingParams(max_tokens=5, default_max_tokens=300)) == {
        "max_tokens": 5
    }
    renamed = sampling_options(chat_pb2.SamplingParams(default_max_tokens=9), {"max_tokens": "m"})
    assert renamed == {"m": 9}


def test_schema_properties_keep_the_required_order_whatever_the_struct_order() -> None:
    from google.protobuf import struct_pb2

    from hybridinference.providers.openai_wire import struct_dict

    schema = struct_pb2.Struct()
    schema.update(
        {
            "type": "object",
            "properties": {"zeta": {"type": "string"}, "alpha": {"type": "integer"}, "b": {}},
            "required": ["zeta", "alpha"],
            "maxItems": 2,
        }
    )
    again = struct_pb2.Struct()
    again.ParseFromString(schema.SerializeToString())
    for struct in (schema, again):
        plain = struct_dict(struct)
        assert list(plain["properties"]) == ["zeta", "alpha", "b"]
        assert isinstance(plain["maxItems"], int)
