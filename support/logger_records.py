"""Record factories shared by the logger tests."""

from __future__ import annotations

from hybridinference.common.v1 import chat_pb2
from hybridinference.logger.v1 import logger_pb2

BASE_SECONDS = 1_750_000_000
MODELS = ("hi-sim", "gpt-x")
PROVIDERS = ("sim", "openai", "vllm")


def make_record(i: int, **overrides: object) -> logger_pb2.RequestRecord:
    """A fully populated record; record i is one second newer than record i-1."""
    record = logger_pb2.RequestRecord(
        request_id=f"req-{i:05d}",
        surface="openai" if i % 2 else "grpc",
        api_key_id=f"key-{i % 3}",
        user=f"user-{i}",
        requested_model=MODELS[i % len(MODELS)],
        served_model="hi-sim-1",
        provider=PROVIDERS[i % len(PROVIDERS)],
        endpoint=f"ep-{i % 4}",
        attempts=1 + i % 2,
        stream=bool(i % 2),
        status="OK" if i % 5 else "UNAVAILABLE",
        error="" if i % 5 else "upstream down",
        ttft_ms=12.5 + i,
        latency_ms=120.25 + i,
        usage=chat_pb2.Usage(
            prompt_tokens=10 + i,
            completion_tokens=20,
            total_tokens=30 + i,
            cached_tokens=i % 7,
            reasoning_tokens=i % 5,
        ),
        cost_usd=0.000125 * i,
        finish_reason=chat_pb2.FINISH_REASON_STOP,
        sampling=chat_pb2.SamplingParams(max_tokens=64, temperature=0.5, stop=["\n\n"], seed=i),
        metadata={"team": "search", "i": str(i)},
        # Two records share each caller's id (the key stays unique).
        client_request_id=f"client-{i // 2:05d}",
        traceparent=f"00-{i + 1:032x}-{i + 1:016x}-01",
        queue_ms=0.25 * i,
    )
    if i % 3 == 0:
        record.tools_offered.extend(["get_weather", "get_time"])
        record.tools_called.extend(["get_weather", "get_weather"])
        record.features.extend(["tools", "reasoning"])
    # Microsecond precision: what both stores keep.
    record.started_at.seconds = BASE_SECONDS + i
    record.started_at.nanos = 123_456_000
    for name, value in overrides.items():
        if name == "started_at_seconds":
            record.started_at.seconds = int(value)  # type: ignore[call-overload]
        else:
            setattr(record, name, value)
    return record
