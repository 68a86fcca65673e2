"""The sim's rich answers: schema instances that validate, and the tool-calling rules."""

from __future__ import annotations

import random
from typing import Literal

import orjson
from google.protobuf import json_format
from pydantic import BaseModel, Field

from hybridinference.common.v1 import chat_pb2
from hybridinference.providers.sim_chat import instance, tool_calls


class Address(BaseModel):
    street: str = Field(min_length=12)
    zip_code: str | None


class Person(BaseModel):
    name: str = Field(max_length=3)
    age: int = Field(ge=18, lt=20)
    score: float = Field(gt=1.5, le=2.5)
    kind: Literal["a", "b"]
    tags: list[str] = Field(min_length=2)
    home: Address
    friends: list[Address]


def test_instances_validate_against_pydantic_schemas() -> None:
    schema = Person.model_json_schema()
    for seed in range(20):
        value = instance(schema, random.Random(seed))
        Person.model_validate_json(orjson.dumps(value))


def test_instances_are_deterministic() -> None:
    schema = Person.model_json_schema()
    assert instance(schema, random.Random(1)) == instance(schema, random.Random(1))


def _options(*names: str, **fields: object) -> chat_pb2.ChatOptions:
    options = chat_pb2.ChatOptions(**fields)
    for name in names:
        tool = options.tools.add(type="function")
        tool.function.name = name
        json_format.ParseDict(
            {"type": "object", "properties": {"q": {"type": "string"}}}, tool.function.parameters
        )
    return options


USER = chat_pb2.ChatMessage(role="user", content="go")


def test_tool_rules() -> None:
    rng = random.Random(0)
    assert [c.function.name for c in tool_calls([USER], _options("a", "b"), rng)] == ["a", "b"]
    single = _options("a", "b", parallel_tool_calls=False)
    assert [c.function.name for c in tool_calls([USER], single, rng)] == ["a"]
    named = _options("a", "b", tool_choice=chat_pb2.ToolChoice(function_name="b"))
    assert [c.function.name for c in tool_calls([USER], named, rng)] == ["b"]
    none = _options("a", tool_choice=chat_pb2.ToolChoice(mode=chat_pb2.TOOL_CHOICE_MODE_NONE))
    assert tool_calls([USER], none, rng) == []
    answered = [USER, chat_pb2.ChatMessage(role="tool", tool_call_id="c", content="r")]
    assert tool_calls(answered, _options("a"), rng) == []
    args = orjson.loads(tool_calls([USER], _options("a"), rng)[0].function.arguments)
    assert isinstance(args["q"], str)
