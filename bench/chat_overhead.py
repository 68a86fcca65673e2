"""The gateway's own work on a plain-text request: `.venv/bin/python bench/chat_overhead.py`.

Per request: parse an OpenAI body, run the admission checks, build the router request. Per
stream: the SSE frames of a 24-token completion from its router events. CPU time
(``time.process_time``), best of 5 rounds. Run it on another checkout's code with
``PYTHONPATH=<checkout>/services`` to compare before/after; bodies and events are the same.
"""

from __future__ import annotations

import inspect
import json
import time
from collections.abc import Callable
from typing import Any

import orjson

from hybridinference.common.v1 import chat_pb2
from hybridinference.gateway import openai_format as fmt
from hybridinference.gateway import openai_request
from hybridinference.gateway.validation import Limits
from hybridinference.router.v1 import router_pb2

BODY = orjson.dumps(
    {
        "model": "hi-sim",
        "stream": True,
        "max_tokens": 64,
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hello there " * 20},
        ],
    }
)
LIMITS = Limits(max_messages=256, max_message_chars=200_000, max_tokens_cap=8192)
TOKENS = [f" tok{i}" for i in range(24)]
COMPLETION = router_pb2.Completion(
    usage=chat_pb2.Usage(prompt_tokens=40, completion_tokens=24, total_tokens=64),
    finish_reason=chat_pb2.FINISH_REASON_STOP,
)
# Before the chat surface, parse_chat_completion took the limits and ran the checks itself.
RICH = "limits" not in inspect.signature(openai_request.parse_chat_completion).parameters


def request_once() -> router_pb2.RouteRequest:
    parse: Any = openai_request.parse_chat_completion
    if RICH:
        from hybridinference.common.settings import CapabilitySettings
        from hybridinference.gateway.admission import prepare

        call = parse(BODY, 1 << 24)
        prepare(call, CapabilitySettings(), LIMITS)
    else:
        call = parse(BODY, LIMITS, 1 << 24)
    request = router_pb2.RouteRequest(
        request_id="r", model=call.model, messages=call.messages, sampling=call.sampling
    )
    if RICH and call.options.ByteSize():
        request.options.CopyFrom(call.options)
    return request


def stream_once() -> bytes:
    writer: Any = fmt.ChunkWriter("r", 1, "m", False)
    out: bytes = writer.role()
    for token in TOKENS:
        event = router_pb2.RouteResponse(delta=token)
        out += writer.event(event) if RICH else writer.content(event.delta)
    return out + writer.finish(COMPLETION)


# 64 tool calls, each an opening fragment and three argument pieces (the sim's shape).
TOOL_EVENTS = [
    router_pb2.RouteResponse(
        tool_calls=[
            chat_pb2.ToolCallDelta(index=call, id=f"call_{call}", type="function", name="f")
            if piece == 0
            else chat_pb2.ToolCallDelta(index=call, arguments='{"city": "Par')
        ]
    )
    for call in range(64)
    for piece in range(4)
]
TEXT_EVENTS = [router_pb2.RouteResponse(delta=f" tok{i}") for i in range(len(TOOL_EVENTS))]


def per_chunk_us(events: list[router_pb2.RouteResponse]) -> float:
    """Gateway CPU per streamed chunk: the SSE frame of each event."""
    writer: Any = fmt.ChunkWriter("r", 1, "m", False)
    writer.role()
    return best_us(lambda: [writer.event(e) for e in events], calls=50) / len(events)


def best_us(fn: Callable[[], object], rounds: int = 5, calls: int = 5000) -> float:
    best = float("inf")
    for _ in range(rounds):
        started = time.process_time()
        for _ in range(calls):
            fn()
        best = min(best, (time.process_time() - started) / calls)
    return round(best * 1e6, 1)


if __name__ == "__main__":
    print(
        json.dumps(
            {
                "code": "chat surface" if RICH else "text only",
                "request_us": best_us(request_once),
                "stream_24_tokens_us": best_us(stream_once),
                **(
                    {
                        "text_chunk_us": round(per_chunk_us(TEXT_EVENTS), 2),
                        "tool_call_chunk_us": round(per_chunk_us(TOOL_EVENTS), 2),
                    }
                    if RICH
                    else {}
                ),
            }
        )
    )
