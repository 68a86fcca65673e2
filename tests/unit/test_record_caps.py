"""Records are capped to the shared limits as the gateway builds them, and the gateway's input
validation agrees with the logger's: whatever a client sends, its record is stored; a request the
gateway serves needs no cutting at all."""

from __future__ import annotations

import math

import grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hybridinference.common import record_limits as limits
from hybridinference.common.v1 import chat_pb2
from hybridinference.gateway.chat_call import ChatCall
from hybridinference.gateway.execution import Execution
from hybridinference.gateway.record_caps import cap_record, cut_to_limits, within_limits
from hybridinference.gateway.records import build_record
from hybridinference.gateway.validation import Limits, check_chat
from hybridinference.logger.v1 import logger_pb2
from hybridinference.logger.validation import check_record

LIMITS = Limits(max_messages=8, max_message_chars=4096, max_tokens_cap=1024)


def _execution(call: ChatCall, status: grpc.StatusCode = grpc.StatusCode.OK) -> Execution:
    execution = Execution("client-1", call, "openai", capture=True)
    execution.status = status
    execution.response_parts.append("hello\x00 there")
    return execution


def _call(**fields: object) -> ChatCall:
    base: dict[str, object] = {
        "model": "hi-sim",
        "messages": [chat_pb2.ChatMessage(role="user", content="hi")],
        "sampling": chat_pb2.SamplingParams(),
        "stream": False,
    }
    return ChatCall(**(base | fields))


def test_a_nul_in_user_and_a_long_stop_still_make_a_storable_record() -> None:
    call = _call(user="bad\x00user", sampling=chat_pb2.SamplingParams(stop=["x" * 1100]))
    record = build_record(_execution(call))
    assert check_record(record) is None
    assert record.user == "baduser"
    assert list(record.sampling.stop) == ["x" * limits.MAX_STOP_CHARS]
    assert "\x00" not in record.response
    assert record.request_id != "client-1" and record.client_request_id == "client-1"


def test_the_gateway_refuses_both_naming_the_field() -> None:
    stop = chat_pb2.SamplingParams(stop=["x" * 1100])
    fields = {
        v.field
        for v in check_chat(
            "hi-sim", _call().messages, stop, LIMITS, sampling_prefix="", user="a\x00b"
        )
    }
    assert fields == {"user", "stop"}


def test_a_huge_refused_request_leaves_a_small_record() -> None:
    """A 401/400 request with every field at its worst: metadata of 4-byte characters, many long
    stop sequences, an enormous prompt and error; the record is still under the size limit."""
    call = _call(
        model="m" * 100_000,
        user="\U0001f600" * 10_000,
        metadata={f"k{i}\x00" + "k" * 300: "\U0001f600" * 5000 for i in range(200)},
        sampling=chat_pb2.SamplingParams(stop=["\U0001f600" * 5000] * 50, temperature=float("nan")),
        messages=[chat_pb2.ChatMessage(role="user", content="p" * 2_000_000)],
    )
    execution = _execution(call, grpc.StatusCode.UNAUTHENTICATED)
    execution.error = "e" * 1_000_000
    seen: list[str] = []
    record = cap_record(build_record(execution, capture_max_chars=1000), 1000, seen.append)
    assert check_record(record) is None
    without_content = record.ByteSize() - len(record.prompt.encode())
    assert without_content - len(record.response.encode()) <= limits.MAX_RECORD_BYTES
    assert len(record.prompt) == 1000
    assert not record.sampling.HasField("temperature")


def _sized(draw: st.DrawFn, limit: int) -> str:
    """A string at, just under or just over a gateway limit (each of those is at, under or over
    the logger's), of 1- to 4-byte characters, sometimes with a NUL."""
    over = draw(st.integers(0, 9)) == 0
    length = draw(st.sampled_from([limit + 1, 1025, 2049] if over else [1, limit - 1, limit]))
    text = draw(st.sampled_from(["a", "é", "\U0001f600"])) * length
    if draw(st.integers(0, 11)) == 0:
        at = draw(st.integers(0, len(text)))
        text = text[:at] + "\x00" + text[at:]
    return text


@st.composite
def calls(draw: st.DrawFn) -> ChatCall:
    entries = draw(st.sampled_from([0, 0, 1, 2, 16, 17, 65]))
    metadata = {_sized(draw, 128): _sized(draw, 512) for _ in range(entries)}
    stops = draw(st.sampled_from([0, 1, 2, 4, 5, 17]))
    sampling = chat_pb2.SamplingParams(stop=[_sized(draw, 1024) for _ in range(stops)])
    if draw(st.booleans()):
        sampling.temperature = draw(st.sampled_from([0.0, 0.7, 2.0, math.nan, math.inf, 3.0]))
    model = "hi-sim" if draw(st.booleans()) else _sized(draw, 256)
    return _call(model=model, user=_sized(draw, 256), metadata=metadata, sampling=sampling)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(calls())
def test_every_record_is_stored_and_a_served_request_needs_no_cut(call: ChatCall) -> None:
    problems = check_chat(
        call.model,
        call.messages,
        call.sampling,
        LIMITS,
        sampling_prefix="",
        user=call.user,
        metadata=call.metadata,
    )
    execution = _execution(call)
    execution.response_parts.clear()
    record = build_record(execution)
    # Whatever was sent: the logger stores the record the gateway built.
    assert check_record(record) is None
    if not problems:
        # Served: the record is exactly the request (nothing was cut to make it storable).
        assert (record.requested_model, record.user) == (call.model, call.user)
        assert dict(record.metadata) == call.metadata
        assert record.sampling == call.sampling


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(calls(), st.sampled_from(["", "boom", "e" * 20_000, "a\x00b"]))
def test_the_quick_check_never_passes_a_record_the_full_pass_would_cut(
    call: ChatCall, error: str
) -> None:
    """within_limits (one read per field, run for every request) is only a shortcut: whenever it
    says a record needs no cut, the full pass indeed cuts nothing."""
    record = logger_pb2.RequestRecord(
        request_id="key",
        client_request_id="client",
        user=call.user,
        requested_model=call.model,
        metadata=call.metadata,
        sampling=call.sampling,
        error=error,
    )
    if within_limits(record, 16_384):
        cut: list[str] = []
        cut_to_limits(record, 16_384, cut.append)
        assert cut == []
