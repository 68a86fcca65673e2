"""OpenAI chat-completions wire format: request bodies out, stream chunks in, for every adapter
that speaks it (vllm, openai_compatible over raw HTTP; openai through the SDK).

Requests: the whole contract (content parts, tool calls and results, tools, tool_choice,
response_format, logprobs, n, reasoning_effort, ...) in OpenAI's JSON. What differs by upstream
is a ``Dialect``: OpenAI itself takes no vLLM extensions (top_k, structured_outputs, ...) and no
``reasoning_content`` on messages, so those are refused by name rather than sent and ignored.

``StreamAssembler`` turns upstream chunks into GenerateResponse events with the provider
contract: the first event carries ``model``; content, reasoning, refusal, tool-call fragments and
logprobs go out per choice as they come; each choice's finish reason and the usage come last.
Chunks are plain dicts from orjson; nothing is validated beyond what is used.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from google.protobuf import struct_pb2

from hybridinference.common.errors import FieldViolation, unsupported_parameter
from hybridinference.common.v1 import chat_pb2
from hybridinference.provider.v1 import provider_pb2
from hybridinference.providers.sampling import sampling_options as set_sampling_options

FINISH_REASONS: dict[str, chat_pb2.FinishReason.ValueType] = {
    "stop": chat_pb2.FINISH_REASON_STOP,
    "length": chat_pb2.FINISH_REASON_LENGTH,
    "content_filter": chat_pb2.FINISH_REASON_CONTENT_FILTER,
    "tool_calls": chat_pb2.FINISH_REASON_TOOL_CALLS,
    "function_call": chat_pb2.FINISH_REASON_TOOL_CALLS,
}

_TOOL_CHOICE_MODES = {
    chat_pb2.TOOL_CHOICE_MODE_NONE: "none",
    chat_pb2.TOOL_CHOICE_MODE_AUTO: "auto",
    chat_pb2.TOOL_CHOICE_MODE_REQUIRED: "required",
}
_RESPONSE_FORMATS = {
    chat_pb2.RESPONSE_FORMAT_TYPE_TEXT: "text",
    chat_pb2.RESPONSE_FORMAT_TYPE_JSON_OBJECT: "json_object",
    chat_pb2.RESPONSE_FORMAT_TYPE_JSON_SCHEMA: "json_schema",
}
REASONING_EFFORTS = {
    chat_pb2.REASONING_EFFORT_NONE: "none",
    chat_pb2.REASONING_EFFORT_MINIMAL: "minimal",
    chat_pb2.REASONING_EFFORT_LOW: "low",
    chat_pb2.REASONING_EFFORT_MEDIUM: "medium",
    chat_pb2.REASONING_EFFORT_HIGH: "high",
}
_IMAGE_DETAILS = {
    chat_pb2.IMAGE_DETAIL_AUTO: "auto",
    chat_pb2.IMAGE_DETAIL_LOW: "low",
    chat_pb2.IMAGE_DETAIL_HIGH: "high",
}
# The Gemini-only options, by the name the gateway gives them (an OpenAI client sends thinking
# as Gemini's compatibility extension, extra_body.google.thinking_config; top_k only typed).
GEMINI_FIELDS = {
    "thinking_budget": "extra_body.google.thinking_config.thinking_budget",
    "include_thoughts": "extra_body.google.thinking_config.include_thoughts",
    "top_k": "gemini.top_k",
}


class MalformedChunk(ValueError):
    """A stream chunk that is not the shape the wire format promises."""


@dataclass(frozen=True)
class Dialect:
    """What one kind of OpenAI-format upstream accepts beyond OpenAI's own API."""

    name: str
    # vLLM's sampling and guided-decoding extensions (vLLM, SGLang and most engines take them).
    engine_extensions: bool
    # ``reasoning_content`` on earlier assistant turns (vLLM and DeepSeek-style servers).
    reasoning_in_messages: bool
    # Body field for the token cap when the client used ``max_tokens``.
    max_tokens_field: str = "max_tokens"


OPENAI = Dialect("openai", False, False, "max_completion_tokens")
COMPATIBLE = Dialect("openai_compatible", True, True)


def struct_dict(struct: struct_pb2.Struct) -> dict[str, Any]:
    """A Struct as plain JSON: integral numbers back to ints (a schema's ``maxItems: 2`` must not
    reach a strict validator as ``2.0``), keys in a deterministic order.

    A Struct is a map, and its iteration order is random per process, so the client's key order
    is gone by the time a schema gets here. Key order matters for a JSON Schema's ``properties``:
    structured output writes the keys in that order. They are put back in the order of the
    sibling ``required`` list (which is a list, so it kept the client's order; pydantic and most
    generators list every field there in declaration order), the rest by name, so the same
    request always reaches the upstream with the same schema.
    """
    result = {key: _value(struct.fields[key]) for key in sorted(struct.fields)}
    properties, required = result.get("properties"), result.get("required")
    if isinstance(properties, dict) and isinstance(required, list):
        rank = {name: index for index, name in enumerate(required) if isinstance(name, str)}
        result["properties"] = dict(
            sorted(properties.items(), key=lambda item: (rank.get(item[0], len(rank)), item[0]))
        )
    return result


def _value(value: struct_pb2.Value) -> Any:
    kind = value.WhichOneof("kind")
    if kind == "struct_value":
        return struct_dict(value.struct_value)
    if kind == "list_value":
        return [_value(item) for item in value.list_value.values]
    if kind == "number_value":
        number = value.number_value
        return int(number) if number.is_integer() and abs(number) < 2**53 else number
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return value.bool_value
    return None


def _part(part: chat_pb2.ContentPart) -> dict[str, Any]:
    kind = part.WhichOneof("kind")
    if kind == "text":
        return {"type": "text", "text": part.text}
    if kind == "image_url":
        image: dict[str, Any] = {"url": part.image_url.url}
        if part.image_url.detail:
            image["detail"] = _IMAGE_DETAILS[part.image_url.detail]
        return {"type": "image_url", "image_url": image}
    if kind == "input_audio":
        audio = part.input_audio
        return {"type": "input_audio", "input_audio": {"data": audio.data, "format": audio.format}}
    file = part.file
    body = {
        name: value
        for name, value in (
            ("file_data", file.file_data),
            ("file_id", file.file_id),
            ("filename", file.filename),
        )
        if value
    }
    return {"type": "file", "file": body}


def chat_messages(
    request: provider_pb2.GenerateRequest, dialect: Dialect = COMPATIBLE
) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    refused: list[FieldViolation] = []
    for index, message in enumerate(request.messages):
        item: dict[str, Any] = {"role": message.role}
        if message.parts:
            item["content"] = [_part(part) for part in message.parts]
        elif message.content or not message.tool_calls:
            item["content"] = message.content
        else:
            # An assistant turn that only called tools.
            item["content"] = None
        if message.name:
            item["name"] = message.name
        if message.tool_calls:
            item["tool_calls"] = [
                {
                    "id": call.id,
                    "type": call.type or "function",
                    "function": {"name": call.function.name, "arguments": call.function.arguments},
                }
                for call in message.tool_calls
            ]
        if message.refusal:
            item["refusal"] = message.refusal
        if message.tool_call_id:
            item["tool_call_id"] = message.tool_call_id
        if message.reasoning_content:
            if dialect.reasoning_in_messages:
                item["reasoning_content"] = message.reasoning_content
            else:
                refused.append(
                    FieldViolation(
                        f"messages[{index}].reasoning_content",
                        f"{dialect.name} does not take reasoning back in messages",
                    )
                )
        messages.append(item)
    if refused:
        raise unsupported_parameter(refused)
    return messages


def sampling_options(
    sampling: chat_pb2.SamplingParams, max_tokens_field: str = "max_tokens"
) -> dict[str, Any]:
    """Only the parameters the caller set, so the upstream applies its own defaults otherwise."""
    field = "max_completion_tokens" if sampling.max_tokens_is_completion_limit else max_tokens_field
    options = set_sampling_options(sampling, {"max_tokens": field})
    if sampling.n:
        options["n"] = sampling.n
    if sampling.logprobs:
        options["logprobs"] = True
    if sampling.HasField("top_logprobs"):
        options["top_logprobs"] = sampling.top_logprobs
    if sampling.logit_bias:
        # JSON object keys are strings; OpenAI's API takes token ids as string keys.
        options["logit_bias"] = {str(token): bias for token, bias in sampling.logit_bias.items()}
    return options


def _tool(tool: chat_pb2.Tool) -> dict[str, Any]:
    function: dict[str, Any] = {"name": tool.function.name}
    if tool.function.description:
        function["description"] = tool.function.description
    if tool.function.HasField("parameters"):
        function["parameters"] = struct_dict(tool.function.parameters)
    if tool.function.HasField("strict"):
        function["strict"] = tool.function.strict
    return {"type": tool.type or "function", "function": function}


def _response_format(fmt: chat_pb2.ResponseFormat) -> dict[str, Any]:
    body: dict[str, Any] = {"type": _RESPONSE_FORMATS[fmt.type]}
    if fmt.type == chat_pb2.RESPONSE_FORMAT_TYPE_JSON_SCHEMA:
        schema = fmt.json_schema
        spec: dict[str, Any] = {"name": schema.name, "schema": struct_dict(schema.schema)}
        if schema.description:
            spec["description"] = schema.description
        if schema.HasField("strict"):
            spec["strict"] = schema.strict
        body["json_schema"] = spec
    return body


def _engine_options(params: chat_pb2.VllmParams) -> dict[str, Any]:
    """vLLM's extensions under the names its OpenAI server reads."""
    options: dict[str, Any] = {}
    for name in ("top_k", "min_p", "repetition_penalty", "min_tokens"):
        if params.HasField(name):
            options[name] = getattr(params, name)
    if params.HasField("chat_template_kwargs"):
        options["chat_template_kwargs"] = struct_dict(params.chat_template_kwargs)
    if params.HasField("structured_outputs"):
        guided = params.structured_outputs
        spec: dict[str, Any] = {}
        if guided.HasField("json"):
            spec["json"] = struct_dict(guided.json)
        if guided.regex:
            spec["regex"] = guided.regex
        if guided.choice:
            spec["choice"] = list(guided.choice)
        if guided.grammar:
            spec["grammar"] = guided.grammar
        options["structured_outputs"] = spec
    return options


def set_vllm_fields(params: chat_pb2.VllmParams) -> list[str]:
    """The names of the vLLM options a request set (for refusals)."""
    names = [
        name
        for name in ("top_k", "min_p", "repetition_penalty", "min_tokens")
        if params.HasField(name)
    ]
    names += [
        name for name in ("chat_template_kwargs", "structured_outputs") if params.HasField(name)
    ]
    return names


def set_gemini_fields(params: chat_pb2.GeminiParams) -> list[str]:
    names = []
    for name, client in GEMINI_FIELDS.items():
        if params.HasField(name):  # type: ignore[arg-type]
            names.append(client)
    return names


def chat_options(options: chat_pb2.ChatOptions, dialect: Dialect) -> dict[str, Any]:
    """The request options as body fields; what the dialect's upstream cannot take is refused."""
    body: dict[str, Any] = {}
    refused: list[FieldViolation] = []
    if options.tools:
        body["tools"] = [_tool(tool) for tool in options.tools]
    if options.HasField("tool_choice"):
        choice = options.tool_choice
        if choice.WhichOneof("choice") == "function_name":
            body["tool_choice"] = {"type": "function", "function": {"name": choice.function_name}}
        elif choice.mode:
            body["tool_choice"] = _TOOL_CHOICE_MODES[choice.mode]
    if options.HasField("parallel_tool_calls"):
        body["parallel_tool_calls"] = options.parallel_tool_calls
    if options.response_format.type:
        body["response_format"] = _response_format(options.response_format)
    if options.reasoning_effort:
        body["reasoning_effort"] = REASONING_EFFORTS[options.reasoning_effort]
    if options.service_tier:
        body["service_tier"] = options.service_tier
    if options.user:
        body["user"] = options.user
    if options.HasField("vllm"):
        if dialect.engine_extensions:
            body.update(_engine_options(options.vllm))
        else:
            refused += [
                FieldViolation(name, f"{dialect.name} does not support the vLLM option {name}")
                for name in set_vllm_fields(options.vllm)
            ]
    if options.HasField("gemini"):
        refused += [
            FieldViolation(name, f"{dialect.name} does not support the Gemini option {name}")
            for name in set_gemini_fields(options.gemini)
        ]
    if refused:
        raise unsupported_parameter(refused)
    if options.HasField("extra_body"):
        # Fields the model's config lets through unchanged; they do not override modelled ones.
        for key, value in struct_dict(options.extra_body).items():
            body.setdefault(key, value)
    return body


def chat_body(
    model: str, request: provider_pb2.GenerateRequest, dialect: Dialect = COMPATIBLE
) -> dict[str, Any]:
    """A streaming chat-completions request that asks for usage in the stream."""
    body: dict[str, Any] = {
        "model": model,
        "messages": chat_messages(request, dialect),
        "stream": True,
        "stream_options": {"include_usage": True},
        **sampling_options(request.sampling, dialect.max_tokens_field),
    }
    if request.HasField("options"):
        for key, value in chat_options(request.options, dialect).items():
            body.setdefault(key, value)
    return body


def _token_logprobs(items: Any) -> list[chat_pb2.TokenLogprob]:
    result = []
    for item in items:
        entry = chat_pb2.TokenLogprob(token=item["token"], logprob=item["logprob"])
        raw = item.get("bytes")
        if raw is not None:
            entry.bytes = bytes(raw)
        for top in item.get("top_logprobs") or ():
            alternative = entry.top_logprobs.add(token=top["token"], logprob=top["logprob"])
            top_raw = top.get("bytes")
            if top_raw is not None:
                alternative.bytes = bytes(top_raw)
        result.append(entry)
    return result


def _add_tool_calls(event: provider_pb2.GenerateResponse, calls: Any) -> None:
    """Streamed tool-call fragments onto ``event``. Most fragments are an index and a piece of
    arguments, so only the fields present are set (this runs once per chunk of a call)."""
    add = event.tool_calls.add
    for position, call in enumerate(calls):
        fragment = add(index=int(call.get("index", position)))
        function = call.get("function")
        if function:
            arguments = function.get("arguments")
            if arguments:
                fragment.arguments = arguments
            name = function.get("name")
            if name:
                fragment.name = name
        call_id = call.get("id")
        if call_id:
            fragment.id = call_id
            fragment.type = call.get("type") or "function"


def merge_events(
    events: list[provider_pb2.GenerateResponse],
) -> list[provider_pb2.GenerateResponse]:
    """Consecutive events of one choice as one (the first one's model stays): every hop after
    the provider pays per message. Argument fragments of the same call are joined."""
    merged: list[provider_pb2.GenerateResponse] = []
    for event in events:
        last = merged[-1] if merged else None
        if last is None or last.index != event.index:
            merged.append(event)
            continue
        last.delta += event.delta
        last.reasoning += event.reasoning
        last.refusal += event.refusal
        for fragment in event.tool_calls:
            previous = last.tool_calls[-1] if last.tool_calls else None
            if (
                previous is not None
                and previous.index == fragment.index
                and not fragment.id
                and not fragment.name
            ):
                previous.arguments += fragment.arguments
            else:
                last.tool_calls.append(fragment)
        if event.HasField("logprobs"):
            last.logprobs.content.extend(event.logprobs.content)
            last.logprobs.refusal.extend(event.logprobs.refusal)
    return merged


class StreamAssembler:
    """Stateful translation of one stream's chunks into provider events."""

    __slots__ = (
        "_cached",
        "_completion",
        "_finish",
        "_model",
        "_prompt",
        "_reasoning",
        "_sent_first",
        "deltas",
    )

    def __init__(self, model: str) -> None:
        self._model = model
        self._sent_first = False
        # Finish reason per choice index, in the order they came.
        self._finish: dict[int, chat_pb2.FinishReason.ValueType] = {}
        self._prompt: int | None = None
        self._completion: int | None = None
        self._cached = 0
        self._reasoning = 0
        # Output events streamed (content, reasoning, refusal or tool-call fragments): whether
        # the first-output deadline is met, and the token count when the upstream reports none.
        self.deltas = 0

    @property
    def finished(self) -> bool:
        """Whether the upstream said why it stopped (a stream may end right after)."""
        return bool(self._finish)

    def text(self, content: str) -> provider_pb2.GenerateResponse:
        return self._out(provider_pb2.GenerateResponse(delta=content))

    def _out(self, event: provider_pb2.GenerateResponse) -> provider_pb2.GenerateResponse:
        self.deltas += 1
        if not self._sent_first:
            self._sent_first = True
            event.model = self._model
        return event

    def finish(self, reason: str, index: int = 0) -> None:
        self._finish[index] = FINISH_REASONS.get(reason, chat_pb2.FINISH_REASON_STOP)

    def usage(self, prompt: int, completion: int, cached: int = 0, reasoning: int = 0) -> None:
        self._prompt, self._completion = prompt, completion
        self._cached, self._reasoning = cached, reasoning

    def chunk(self, chunk: Any, out: list[provider_pb2.GenerateResponse]) -> None:
        """One decoded chunk (a dict); its events are appended to ``out``."""
        if not isinstance(chunk, dict):
            raise MalformedChunk(f"chunk is {type(chunk).__name__}, not an object")
        choices = chunk.get("choices")
        if choices:
            if not isinstance(choices, list):
                raise MalformedChunk("choices is not a list")
            for choice in choices:
                try:
                    event = self._choice(choice)
                except (AttributeError, IndexError, KeyError, TypeError, ValueError) as error:
                    raise MalformedChunk(f"bad choice: {error!r}") from None
                if event is not None:
                    out.append(event)
        elif choices is not None and not isinstance(choices, list):
            raise MalformedChunk("choices is not a list")
        usage = chunk.get("usage")
        if usage:
            try:
                prompt_details = usage.get("prompt_tokens_details") or {}
                completion_details = usage.get("completion_tokens_details") or {}
                self.usage(
                    int(usage["prompt_tokens"]),
                    int(usage["completion_tokens"]),
                    int(prompt_details.get("cached_tokens") or 0),
                    int(completion_details.get("reasoning_tokens") or 0),
                )
            except (AttributeError, KeyError, TypeError, ValueError) as error:
                raise MalformedChunk(f"bad usage: {error}") from None

    def _choice(self, choice: Any) -> provider_pb2.GenerateResponse | None:
        event: provider_pb2.GenerateResponse | None = None
        delta = choice.get("delta")
        if delta:
            content = delta.get("content")
            if content:
                if not isinstance(content, str):
                    raise MalformedChunk("delta.content is not a string")
                event = provider_pb2.GenerateResponse(delta=content)
            # vLLM and DeepSeek name it reasoning_content; newer vLLM also ``reasoning``.
            reasoning = delta.get("reasoning_content") or delta.get("reasoning")
            if reasoning:
                event = event or provider_pb2.GenerateResponse()
                event.reasoning = str(reasoning)
            refusal = delta.get("refusal")
            if refusal:
                event = event or provider_pb2.GenerateResponse()
                event.refusal = str(refusal)
            calls = delta.get("tool_calls")
            if calls:
                event = event or provider_pb2.GenerateResponse()
                _add_tool_calls(event, calls)
        logprobs = choice.get("logprobs")
        if logprobs:
            content_lp = logprobs.get("content")
            refusal_lp = logprobs.get("refusal")
            if content_lp or refusal_lp:
                event = event or provider_pb2.GenerateResponse()
                if content_lp:
                    event.logprobs.content.extend(_token_logprobs(content_lp))
                if refusal_lp:
                    event.logprobs.refusal.extend(_token_logprobs(refusal_lp))
        index = int(choice.get("index") or 0)
        reason = choice.get("finish_reason")
        if reason:
            self.finish(str(reason), index)
        if event is None:
            return None
        if index:
            event.index = index
        return self._out(event)

    def final(self) -> list[provider_pb2.GenerateResponse]:
        """The closing events: each choice's finish reason (the last one also carries usage, the
        upstream's or else the events counted)."""
        completion = self._completion if self._completion is not None else self.deltas
        prompt = self._prompt or 0
        usage = chat_pb2.Usage(
            prompt_tokens=prompt,
            completion_tokens=completion,
            total_tokens=prompt + completion,
            cached_tokens=self._cached,
            reasoning_tokens=self._reasoning,
        )
        finishes = sorted(self._finish.items()) or [(0, chat_pb2.FINISH_REASON_STOP)]
        events = [
            provider_pb2.GenerateResponse(index=index, finish_reason=reason)
            for index, reason in finishes
        ]
        events[-1].usage.CopyFrom(usage)
        if not self._sent_first:
            self._sent_first = True
            events[0].model = self._model
        return events
