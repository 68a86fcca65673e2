"""What a request may cost at most, known before it runs: reserved at admission.

Tokens: an upper bound on the prompt (the messages' encoded bytes — a byte-level tokenizer
never makes more tokens than bytes — plus a few per message for the chat template) plus
``max_tokens``, or the model's cap when the request sets none. Cost: those tokens at the
dearest prices among the model's endpoints (the router may fall back to any of them).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from hybridinference.common.settings import MeshSettings
from hybridinference.common.v1 import chat_pb2
from hybridinference.gateway.quota.counters import Reservation

# Role markers and separators a chat template adds per message (generous for common templates).
TEMPLATE_TOKENS_PER_MESSAGE = 8


@dataclass(frozen=True)
class Prices:
    prompt_per_1m: float = 0.0
    completion_per_1m: float = 0.0


@dataclass(frozen=True)
class Reserver:
    default_cap: int
    caps: dict[str, int] = field(default_factory=dict)
    prices: dict[str, Prices] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: MeshSettings) -> Reserver:
        endpoints = {e.id: e for worker in settings.providers for e in worker.endpoints}
        prices = {}
        for model in settings.models:
            own = [endpoints[i] for i in model.endpoints if i in endpoints]
            prices[model.name] = Prices(
                max((e.price_prompt_per_1m for e in own), default=0.0),
                max((e.price_completion_per_1m for e in own), default=0.0),
            )
        gateway = settings.gateway
        return cls(gateway.max_tokens_cap, dict(gateway.max_tokens_caps), prices)

    def reserve(
        self,
        model: str,
        messages: Sequence[chat_pb2.ChatMessage],
        max_tokens: int | None,
    ) -> Reservation:
        # ByteSize covers every field of a message (text, name, role), present and future.
        prompt = sum(m.ByteSize() + TEMPLATE_TOKENS_PER_MESSAGE for m in messages)
        completion = (
            max_tokens if max_tokens is not None else self.caps.get(model, self.default_cap)
        )
        price = self.prices.get(model, Prices())
        cost = (prompt * price.prompt_per_1m + completion * price.completion_per_1m) / 1e6
        return Reservation(prompt + completion, cost)
