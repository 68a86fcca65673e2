"""Builds the one request record the gateway sends per request, capped to the record limits
(record_caps.py) whatever the request was, so the logger always stores it."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence

from google.protobuf import json_format, timestamp_pb2

from hybridinference.common.chat_features import features_used
from hybridinference.common.settings import LoggerSettings
from hybridinference.common.v1 import chat_pb2
from hybridinference.gateway.execution import Execution
from hybridinference.gateway.metrics import record_capped
from hybridinference.gateway.record_caps import cap_record
from hybridinference.logger.v1 import logger_pb2

# How a record's `error` starts when the stream failed after part of the answer was sent.
STREAM_CUT_PREFIX = "stream cut after"


def prompt_text(messages: Sequence[chat_pb2.ChatMessage]) -> str:
    """The prompt as stored with content capture on: the messages as a JSON array, each as its
    proto JSON (``{"role": "user", "content": "hi"}``), so nothing the client sent is lost."""
    return json.dumps(
        [json_format.MessageToDict(m, preserving_proto_field_name=True) for m in messages],
        ensure_ascii=False,
    )


# The logger's own cap for captured prompt and response (logger.capture_max_chars).
DEFAULT_CAPTURE_MAX_CHARS = LoggerSettings.model_fields["capture_max_chars"].default


def build_record(
    execution: Execution, capture_max_chars: int = DEFAULT_CAPTURE_MAX_CHARS
) -> logger_pb2.RequestRecord:
    call = execution.call
    started = timestamp_pb2.Timestamp()
    started.FromNanoseconds(int(execution.started_at * 1e9))
    record = logger_pb2.RequestRecord(
        request_id=execution.record_id,
        client_request_id=execution.request_id,
        started_at=started,
        surface=execution.surface,
        user=call.user,
        requested_model=call.model,
        stream=call.stream,
        status=execution.status.name,
        error=execution.error,
        ttft_ms=execution.ttft_ms,
        latency_ms=(time.monotonic() - execution.started_monotonic) * 1000.0,
        sampling=call.sampling,
        metadata=call.metadata,
        # The key's public id, never the key.
        api_key_id=execution.api_key.id if execution.api_key is not None else "",
    )
    if call.options.tools:
        record.tools_offered.extend(tool.function.name for tool in call.options.tools)
    record.tools_called.extend(execution.tools_called)
    if call.messages:
        record.features.extend(
            use.feature for use in features_used(call.messages, call.sampling, call.options)
        )
    if execution.selection is not None:
        record.served_model = execution.selection.served_model
        record.provider = execution.selection.provider
        record.endpoint = execution.selection.endpoint
        record.attempts = execution.selection.attempts
        # Every attempt before the one that served moved on to the next candidate.
        record.fallbacks = max(execution.selection.attempts - 1, 0)
        record.hedged = execution.selection.hedged
        record.queue_ms = execution.selection.queued_ms
    if execution.capture:
        # The logger caps both (logger.capture_max_chars) before storing them.
        record.prompt = prompt_text(call.messages)
        record.response = "".join(execution.response_parts)
    if execution.completion is not None:
        record.usage.CopyFrom(execution.completion.usage)
        record.cost_usd = execution.completion.cost_usd
        record.finish_reason = execution.completion.finish_reason
    if execution.stream_cut:
        # Its usage is what the client received (partial_usage.complete_partial).
        record.error = f"{STREAM_CUT_PREFIX} {execution.streamed_tokens} tokens: {execution.error}"
    return cap_record(record, capture_max_chars, record_capped)
