"""OpenAI chat messages (JSON) → ChatMessage protos, with OpenAI's field paths in errors.

Type errors only; the shared checks (chat_checks.py) judge the structure afterwards.
"""

from __future__ import annotations

from typing import Any

from hybridinference.common.errors import FieldViolation
from hybridinference.common.v1 import chat_pb2

_MESSAGE_KEYS = frozenset(
    {"role", "content", "name", "tool_calls", "refusal", "tool_call_id", "reasoning_content"}
)
_DETAIL = {
    "auto": chat_pb2.IMAGE_DETAIL_AUTO,
    "low": chat_pb2.IMAGE_DETAIL_LOW,
    "high": chat_pb2.IMAGE_DETAIL_HIGH,
}


def parse_messages(raw: Any, problems: list[FieldViolation]) -> list[chat_pb2.ChatMessage]:
    if raw is None:
        problems.append(FieldViolation("messages", "is required"))
        return []
    if not isinstance(raw, list):
        problems.append(FieldViolation("messages", "must be an array"))
        return []
    return [_message(item, f"messages[{i}]", problems) for i, item in enumerate(raw)]


def _message(item: Any, where: str, problems: list[FieldViolation]) -> chat_pb2.ChatMessage:
    message = chat_pb2.ChatMessage()
    if not isinstance(item, dict):
        problems.append(FieldViolation(where, "must be an object"))
        return message
    for key in item.keys() - _MESSAGE_KEYS:
        problems.append(FieldViolation(f"{where}.{key}", "is not a recognised message field"))
    role = item.get("role")
    if isinstance(role, str):
        message.role = role
    else:
        problems.append(FieldViolation(f"{where}.role", "must be a string"))
    _content(item.get("content"), message, f"{where}.content", problems)
    for key in ("name", "tool_call_id", "reasoning_content"):
        value = item.get(key)
        if value is None:
            continue
        if isinstance(value, str):
            setattr(message, key, value)
        else:
            problems.append(FieldViolation(f"{where}.{key}", "must be a string"))
    refusal = item.get("refusal")
    if refusal is not None:
        if isinstance(refusal, str):
            message.refusal += refusal
        else:
            problems.append(FieldViolation(f"{where}.refusal", "must be a string or null"))
    calls = item.get("tool_calls")
    if calls is not None:
        if not isinstance(calls, list):
            problems.append(FieldViolation(f"{where}.tool_calls", "must be an array"))
        else:
            for index, call in enumerate(calls):
                parsed = _tool_call(call, f"{where}.tool_calls[{index}]", problems)
                if parsed is not None:
                    message.tool_calls.append(parsed)
    return message


def _content(
    raw: Any, message: chat_pb2.ChatMessage, where: str, problems: list[FieldViolation]
) -> None:
    """A string, null (assistant turns with tool calls), or an array of parts. An array of
    only text parts is joined into text (what the model sees either way)."""
    if raw is None:
        return
    if isinstance(raw, str):
        message.content = raw
        return
    if not isinstance(raw, list):
        problems.append(FieldViolation(where, "must be a string or an array of content parts"))
        return
    parts: list[chat_pb2.ContentPart] = []
    for index, item in enumerate(raw):
        at = f"{where}[{index}]"
        if not isinstance(item, dict):
            problems.append(FieldViolation(at, "must be an object"))
            continue
        kind = item.get("type")
        if kind == "text":
            text = item.get("text")
            if isinstance(text, str):
                parts.append(chat_pb2.ContentPart(text=text))
            else:
                problems.append(FieldViolation(f"{at}.text", "must be a string"))
        elif kind == "refusal":
            refusal = item.get("refusal")
            if isinstance(refusal, str):
                message.refusal += refusal
            else:
                problems.append(FieldViolation(f"{at}.refusal", "must be a string"))
        elif kind == "image_url":
            image = _object(item.get("image_url"), f"{at}.image_url", problems)
            url = _string(image, "url", f"{at}.image_url", problems, required=True)
            detail_name = _string(image, "detail", f"{at}.image_url", problems) or "auto"
            detail = _DETAIL.get(detail_name)
            if detail is None:
                problems.append(
                    FieldViolation(f"{at}.image_url.detail", "must be 'auto', 'low' or 'high'")
                )
                detail = chat_pb2.IMAGE_DETAIL_AUTO
            parts.append(chat_pb2.ContentPart(image_url=chat_pb2.ImageUrl(url=url, detail=detail)))
        elif kind == "input_audio":
            audio = _object(item.get("input_audio"), f"{at}.input_audio", problems)
            parts.append(
                chat_pb2.ContentPart(
                    input_audio=chat_pb2.InputAudio(
                        data=_string(audio, "data", f"{at}.input_audio", problems, required=True),
                        format=_string(
                            audio, "format", f"{at}.input_audio", problems, required=True
                        ),
                    )
                )
            )
        elif kind == "file":
            file = _object(item.get("file"), f"{at}.file", problems)
            parts.append(
                chat_pb2.ContentPart(
                    file=chat_pb2.FilePart(
                        file_data=_string(file, "file_data", f"{at}.file", problems),
                        file_id=_string(file, "file_id", f"{at}.file", problems),
                        filename=_string(file, "filename", f"{at}.file", problems),
                    )
                )
            )
        else:
            problems.append(
                FieldViolation(
                    f"{at}.type", "must be one of text, image_url, input_audio, file, refusal"
                )
            )
    if all(part.WhichOneof("kind") == "text" for part in parts):
        message.content = "".join(part.text for part in parts)
    else:
        message.parts.extend(parts)


def _tool_call(raw: Any, where: str, problems: list[FieldViolation]) -> chat_pb2.ToolCall | None:
    if not isinstance(raw, dict):
        problems.append(FieldViolation(where, "must be an object"))
        return None
    call = chat_pb2.ToolCall(
        id=_string(raw, "id", where, problems, required=True),
        type=_string(raw, "type", where, problems) or "function",
    )
    function = _object(raw.get("function"), f"{where}.function", problems)
    call.function.name = _string(function, "name", f"{where}.function", problems, required=True)
    call.function.arguments = _string(function, "arguments", f"{where}.function", problems)
    return call


def _object(raw: Any, where: str, problems: list[FieldViolation]) -> dict[str, Any]:
    if isinstance(raw, dict):
        return raw
    problems.append(FieldViolation(where, "must be an object"))
    return {}


def _string(
    data: dict[str, Any],
    key: str,
    where: str,
    problems: list[FieldViolation],
    required: bool = False,
) -> str:
    value = data.get(key)
    if value is None:
        if required:
            problems.append(FieldViolation(f"{where}.{key}", "is required"))
        return ""
    if not isinstance(value, str):
        problems.append(FieldViolation(f"{where}.{key}", "must be a string"))
        return ""
    return value
