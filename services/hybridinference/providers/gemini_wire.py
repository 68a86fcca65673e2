"""The chat contract in Gemini's terms, for the ``google-genai`` SDK: requests out, chunks in.

Requests: ``system``/``developer`` messages become the system instruction; ``assistant`` is
``model`` (its tool calls ``function_call`` parts); tool results become ``function_response``
parts (consecutive results in one user turn, as Gemini wants parallel answers); images, audio
and files travel inline (``inline_data``). Tools become function declarations (their JSON Schema
as ``parameters_json_schema``) with a function-calling config from ``tool_choice``;
``response_format`` becomes ``response_mime_type`` + ``response_json_schema``;
``reasoning_effort`` a thinking budget (Gemini's own OpenAI-compatibility mapping) with thought
summaries on. What Gemini has no equivalent for (logit_bias, service_tier, user, vLLM options,
passthrough fields, ``parallel_tool_calls: false``, images by http URL, uploaded file ids) is
refused by name.

Responses: thought parts are reasoning deltas, ``function_call`` parts whole tool calls (Gemini
does not stream arguments), and a candidate that called a function finishes with ``tool_calls``.
Gemini 3 needs a call's ``thought_signature`` back with the call in the next turn; it rides in the
tool call id (``<id>.sig.<base64url>``), which clients echo verbatim.
"""

from __future__ import annotations

import base64
import binascii
import re
import uuid
from typing import Any

import orjson

from hybridinference.common.errors import FieldViolation, unsupported_parameter
from hybridinference.common.v1 import chat_pb2
from hybridinference.provider.v1 import provider_pb2
from hybridinference.providers.openai_wire import set_vllm_fields, struct_dict
from hybridinference.providers.sampling import sampling_options

_SYSTEM_ROLES = frozenset({"system", "developer"})
# Gemini's names for the sampling fields that differ from OpenAI's.
_GEMINI_NAMES = {"max_tokens": "max_output_tokens", "stop": "stop_sequences"}
_CONTENT_FILTER = frozenset(
    {"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY"}
)
# reasoning_effort → thinking budget, as Gemini's OpenAI-compatible endpoint maps it.
_THINKING_BUDGETS = {
    chat_pb2.REASONING_EFFORT_NONE: 0,
    chat_pb2.REASONING_EFFORT_MINIMAL: 1024,
    chat_pb2.REASONING_EFFORT_LOW: 1024,
    chat_pb2.REASONING_EFFORT_MEDIUM: 8192,
    chat_pb2.REASONING_EFFORT_HIGH: 24576,
}
_DATA_URL = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?:;[^,]*)?;base64,(?P<data>.*)$", re.S)
_SIGNATURE = ".sig."


class Refusals:
    """Collects what a request asks of Gemini that Gemini cannot do, to refuse it at once."""

    def __init__(self) -> None:
        self.violations: list[FieldViolation] = []

    def add(self, field: str, why: str) -> None:
        self.violations.append(FieldViolation(field, why))

    def raise_any(self) -> None:
        if self.violations:
            raise unsupported_parameter(self.violations)


def _inline(url: str, default_mime: str, field: str, refused: Refusals) -> dict[str, Any] | None:
    match = _DATA_URL.match(url)
    data = match.group("data") if match else url
    mime = (match.group("mime") if match else None) or default_mime
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        refused.add(field, "gemini takes media inline: a data: URL or base64 bytes")
        return None
    return {"inline_data": {"mime_type": mime, "data": raw}}


def _part(part: chat_pb2.ContentPart, field: str, refused: Refusals) -> dict[str, Any] | None:
    kind = part.WhichOneof("kind")
    if kind == "text":
        return {"text": part.text}
    if kind == "image_url":
        if not part.image_url.url.startswith("data:"):
            refused.add(field, "gemini takes images inline (a data: URL), not by http URL")
            return None
        return _inline(part.image_url.url, "image/png", field, refused)
    if kind == "input_audio":
        fmt = part.input_audio.format or "wav"
        return _inline(part.input_audio.data, f"audio/{fmt}", field, refused)
    if part.file.file_id:
        refused.add(field, "gemini cannot read an uploaded file id; send the file inline")
        return None
    return _inline(part.file.file_data, "application/pdf", field, refused)


def split_call_id(call_id: str) -> tuple[str, bytes | None]:
    """A tool call id as Gemini's call id and its thought signature (None when it has none)."""
    base, found, signature = call_id.partition(_SIGNATURE)
    if not found:
        return call_id, None
    try:
        return base, base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
    except (binascii.Error, ValueError):
        return call_id, None


def join_call_id(call_id: str, signature: bytes | None) -> str:
    if not signature:
        return call_id
    return call_id + _SIGNATURE + base64.urlsafe_b64encode(signature).decode().rstrip("=")


def _tool_result(content: str) -> dict[str, Any]:
    """A tool message's content as Gemini's function response object."""
    try:
        parsed = orjson.loads(content)
    except orjson.JSONDecodeError:
        return {"result": content}
    return parsed if isinstance(parsed, dict) else {"result": parsed}


def gemini_contents(
    request: provider_pb2.GenerateRequest, refused: Refusals
) -> tuple[list[dict[str, Any]], str | None]:
    """``contents`` and the system instruction (None when there is none) for a conversation."""
    system: list[str] = []
    contents: list[dict[str, Any]] = []
    names: dict[str, str] = {}
    for index, message in enumerate(request.messages):
        field = f"messages[{index}]"
        if message.role in _SYSTEM_ROLES:
            if message.parts and any(p.WhichOneof("kind") != "text" for p in message.parts):
                refused.add(f"{field}.content", "gemini's system instruction is text only")
            system.append(message.content or "".join(p.text for p in message.parts))
            continue
        if message.reasoning_content:
            refused.add(f"{field}.reasoning_content", "gemini does not take reasoning back")
        parts: list[dict[str, Any]] = []
        if message.role == "tool":
            call_id, _ = split_call_id(message.tool_call_id)
            name = names.get(message.tool_call_id)
            if name is None:
                refused.add(f"{field}.tool_call_id", "answers no tool call of an earlier turn")
                continue
            text = message.content or "".join(p.text for p in message.parts)
            response = {"name": name, "response": _tool_result(text), "id": call_id}
            previous = contents[-1] if contents else None
            # Parallel calls' results go back in one turn.
            if previous is not None and all("function_response" in p for p in previous["parts"]):
                previous["parts"].append({"function_response": response})
            else:
                contents.append({"role": "user", "parts": [{"function_response": response}]})
            continue
        if message.parts:
            for position, part in enumerate(message.parts):
                converted = _part(part, f"{field}.content[{position}]", refused)
                if converted is not None:
                    parts.append(converted)
        elif message.content:
            parts.append({"text": message.content})
        if message.refusal:
            parts.append({"text": message.refusal})
        for position, call in enumerate(message.tool_calls):
            call_id, signature = split_call_id(call.id)
            names[call.id] = call.function.name
            try:
                args = orjson.loads(call.function.arguments or "{}")
            except orjson.JSONDecodeError:
                args = None
            if not isinstance(args, dict):
                refused.add(
                    f"{field}.tool_calls[{position}].function.arguments",
                    "must be a JSON object for gemini",
                )
                continue
            function_call: dict[str, Any] = {"name": call.function.name, "args": args}
            if call_id:
                function_call["id"] = call_id
            part_out: dict[str, Any] = {"function_call": function_call}
            if signature is not None:
                part_out["thought_signature"] = signature
            parts.append(part_out)
        role = "model" if message.role == "assistant" else "user"
        contents.append({"role": role, "parts": parts or [{"text": ""}]})
    return contents, ("\n\n".join(system) if system else None)


def _tools(options: chat_pb2.ChatOptions) -> list[dict[str, Any]]:
    declarations = []
    for tool in options.tools:
        declaration: dict[str, Any] = {"name": tool.function.name}
        if tool.function.description:
            declaration["description"] = tool.function.description
        if tool.function.HasField("parameters"):
            declaration["parameters_json_schema"] = struct_dict(tool.function.parameters)
        declarations.append(declaration)
    return [{"function_declarations": declarations}]


def _tool_config(options: chat_pb2.ChatOptions) -> dict[str, Any] | None:
    """tool_choice as Gemini's function-calling mode. ``strict`` tools ask for schema-adherent
    arguments: VALIDATED (call or answer, arguments validated) instead of AUTO; ANY (a call is
    forced) always validates."""
    strict = any(tool.function.strict for tool in options.tools)
    choice = options.tool_choice
    kind = choice.WhichOneof("choice") if options.HasField("tool_choice") else None
    if kind == "function_name":
        return {
            "function_calling_config": {
                "mode": "ANY",
                "allowed_function_names": [choice.function_name],
            }
        }
    mode = choice.mode if kind == "mode" else chat_pb2.TOOL_CHOICE_MODE_UNSPECIFIED
    if mode == chat_pb2.TOOL_CHOICE_MODE_NONE:
        return {"function_calling_config": {"mode": "NONE"}}
    if mode == chat_pb2.TOOL_CHOICE_MODE_REQUIRED:
        return {"function_calling_config": {"mode": "ANY"}}
    if strict:
        return {"function_calling_config": {"mode": "VALIDATED"}}
    if mode == chat_pb2.TOOL_CHOICE_MODE_AUTO:
        return {"function_calling_config": {"mode": "AUTO"}}
    return None


def _thinking(options: chat_pb2.ChatOptions) -> dict[str, Any] | None:
    thinking: dict[str, Any] = {}
    if options.reasoning_effort:
        budget = _THINKING_BUDGETS[options.reasoning_effort]
        thinking["thinking_budget"] = budget
        # Asking for reasoning means wanting to see it: thought summaries as reasoning deltas.
        thinking["include_thoughts"] = budget != 0
    gemini = options.gemini
    if gemini.HasField("thinking_budget"):
        thinking["thinking_budget"] = gemini.thinking_budget
    if gemini.HasField("include_thoughts"):
        thinking["include_thoughts"] = gemini.include_thoughts
    return thinking or None


def gemini_config(
    request: provider_pb2.GenerateRequest, system: str | None, refused: Refusals
) -> dict[str, Any]:
    """The GenerateContentConfig fields (the SDK takes the dict and names them on the wire)."""
    sampling = request.sampling
    config = sampling_options(sampling, _GEMINI_NAMES)
    if sampling.n > 1:
        config["candidate_count"] = sampling.n
    if sampling.logprobs:
        config["response_logprobs"] = True
    if sampling.HasField("top_logprobs"):
        config["logprobs"] = sampling.top_logprobs
    if sampling.logit_bias:
        refused.add("logit_bias", "gemini has no logit bias")
    if system is not None:
        config["system_instruction"] = system
    options = request.options
    if options.tools:
        config["tools"] = _tools(options)
        # Declarations only: the SDK must not try to run functions itself.
        config["automatic_function_calling"] = {"disable": True}
    tool_config = _tool_config(options)
    if tool_config is not None:
        config["tool_config"] = tool_config
    if options.HasField("parallel_tool_calls") and not options.parallel_tool_calls:
        refused.add("parallel_tool_calls", "gemini cannot be kept to one tool call per turn")
    fmt = options.response_format
    if fmt.type in (
        chat_pb2.RESPONSE_FORMAT_TYPE_JSON_OBJECT,
        chat_pb2.RESPONSE_FORMAT_TYPE_JSON_SCHEMA,
    ):
        config["response_mime_type"] = "application/json"
        if fmt.type == chat_pb2.RESPONSE_FORMAT_TYPE_JSON_SCHEMA:
            config["response_json_schema"] = struct_dict(fmt.json_schema.schema)
    thinking = _thinking(options)
    if thinking is not None:
        config["thinking_config"] = thinking
    if options.gemini.HasField("top_k"):
        config["top_k"] = options.gemini.top_k
    for name in ("service_tier", "user"):
        if getattr(options, name):
            refused.add(name, f"gemini has no {name}")
    if options.HasField("vllm"):
        for name in set_vllm_fields(options.vllm):
            refused.add(name, f"gemini does not support the vLLM option {name}")
    if options.HasField("extra_body"):
        for name in options.extra_body.fields:
            refused.add(name, "gemini takes no passthrough fields")
    return config


def finish_reason(reason: Any) -> chat_pb2.FinishReason.ValueType:
    name = str(getattr(reason, "value", reason) or "")
    if name == "MAX_TOKENS":
        return chat_pb2.FINISH_REASON_LENGTH
    if name in _CONTENT_FILTER:
        return chat_pb2.FINISH_REASON_CONTENT_FILTER
    return chat_pb2.FINISH_REASON_STOP


def _logprobs(result: Any) -> chat_pb2.Logprobs | None:
    chosen = getattr(result, "chosen_candidates", None)
    if not chosen:
        return None
    tops = getattr(result, "top_candidates", None) or []
    logprobs = chat_pb2.Logprobs()
    for position, candidate in enumerate(chosen):
        entry = logprobs.content.add(
            token=candidate.token or "", logprob=candidate.log_probability or 0.0
        )
        if position < len(tops):
            for top in tops[position].candidates or []:
                entry.top_logprobs.add(token=top.token or "", logprob=top.log_probability or 0.0)
    return logprobs


class GeminiAssembler:
    """One stream's ``GenerateContentResponse`` chunks into provider events."""

    def __init__(self, model: str) -> None:
        self._model = model
        self._sent_first = False
        self._finish: dict[int, chat_pb2.FinishReason.ValueType] = {}
        # Tool calls made so far, per candidate (the next call's index).
        self._calls: dict[int, int] = {}
        self._usage: tuple[int, int, int, int] | None = None
        # Output events (text, thoughts or calls): the first-output deadline and the fallback
        # token count.
        self.deltas = 0

    @property
    def finished(self) -> bool:
        return bool(self._finish)

    def chunk(self, chunk: Any) -> list[provider_pb2.GenerateResponse]:
        events = []
        for candidate in chunk.candidates or ():
            event = self._candidate(candidate)
            if event is not None:
                events.append(event)
        feedback = chunk.prompt_feedback
        if not chunk.candidates and feedback is not None and feedback.block_reason:
            self._finish[0] = chat_pb2.FINISH_REASON_CONTENT_FILTER
        meta = chunk.usage_metadata
        if meta is not None and meta.prompt_token_count is not None:
            thoughts = int(meta.thoughts_token_count or 0)
            self._usage = (
                int(meta.prompt_token_count),
                # Thinking tokens are billed as output.
                int(meta.candidates_token_count or 0) + thoughts,
                int(meta.cached_content_token_count or 0),
                thoughts,
            )
        return events

    def _candidate(self, candidate: Any) -> provider_pb2.GenerateResponse | None:
        index = int(candidate.index or 0)
        event = provider_pb2.GenerateResponse(index=index)
        content = candidate.content
        for part in (content.parts if content is not None else None) or ():
            call = part.function_call
            if call is not None:
                position = self._calls.get(index, 0)
                self._calls[index] = position + 1
                call_id = call.id or f"call_{uuid.uuid4().hex[:12]}"
                event.tool_calls.add(
                    index=position,
                    id=join_call_id(call_id, part.thought_signature),
                    type="function",
                    name=call.name or "",
                    arguments=orjson.dumps(call.args or {}).decode(),
                )
            elif part.text:
                if part.thought:
                    event.reasoning += part.text
                else:
                    event.delta += part.text
        logprobs = _logprobs(candidate.logprobs_result)
        if logprobs is not None:
            event.logprobs.CopyFrom(logprobs)
        if candidate.finish_reason is not None:
            reason = finish_reason(candidate.finish_reason)
            if reason == chat_pb2.FINISH_REASON_STOP and self._calls.get(index):
                reason = chat_pb2.FINISH_REASON_TOOL_CALLS
            self._finish[index] = reason
        if not (event.delta or event.reasoning or event.tool_calls or logprobs is not None):
            return None
        self.deltas += 1
        if not self._sent_first:
            self._sent_first = True
            event.model = self._model
        return event

    def final(self) -> list[provider_pb2.GenerateResponse]:
        prompt, completion, cached, reasoning = self._usage or (0, self.deltas, 0, 0)
        events = [
            provider_pb2.GenerateResponse(index=index, finish_reason=reason)
            for index, reason in sorted(self._finish.items())
        ]
        events[-1].usage.CopyFrom(
            chat_pb2.Usage(
                prompt_tokens=prompt,
                completion_tokens=completion,
                total_tokens=prompt + completion,
                cached_tokens=cached,
                reasoning_tokens=reasoning,
            )
        )
        if not self._sent_first:
            self._sent_first = True
            events[0].model = self._model
        return events
