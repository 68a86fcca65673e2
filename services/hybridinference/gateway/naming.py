"""Field names in errors, per surface: OpenAI's JSON paths or the typed API's proto paths.

Shared checks name fields the OpenAI way (``tools[0].function.name``, ``messages[1].content[0]``,
``max_tokens``); the typed surface renames them to its paths (``options.tools[0]...``,
``messages[1].parts[0]``, ``sampling.max_tokens``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_OPTION_FIELDS = (
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "response_format",
    "reasoning_effort",
    "service_tier",
    "vllm",
    "gemini",
    "extra_body",
)
_SAMPLING_FIELDS = (
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "stop",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "n",
    "logprobs",
    "top_logprobs",
    "logit_bias",
)
_PART = re.compile(r"^(messages\[\d+\])\.content\[")


@dataclass(frozen=True)
class Naming:
    typed: bool

    def __call__(self, field: str) -> str:
        if not self.typed:
            return field
        head = re.split(r"[.\[]", field, maxsplit=1)[0]
        if head in _OPTION_FIELDS:
            return f"options.{field}"
        if head in _SAMPLING_FIELDS:
            if head == "max_completion_tokens":
                return "sampling.max_tokens"
            return f"sampling.{field}"
        return _PART.sub(r"\1.parts[", field)


OPENAI = Naming(typed=False)
TYPED = Naming(typed=True)
