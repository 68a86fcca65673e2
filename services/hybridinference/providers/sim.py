"""A deterministic simulated LLM: the built-in provider for tests, demos and load runs.

Text is a pure function of the conversation (and ``sampling.seed``): words drawn from a fixed
vocabulary by a PRNG seeded with a stable hash of the messages, one word per token, every token
but the first with a leading space. Timing (time to first token, inter-token latency) and failures
(a random failure before the first token, an abort mid-stream) come from SimEndpointSettings.

Event shape: one event per token (the first one also carries ``model``), then a separate final
event with an empty ``delta`` carrying ``usage`` and ``finish_reason``. When no token is streamed
at all (a stop sequence at the very start) the final event is also the first and carries ``model``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass

import grpc

from hybridinference.common.errors import FieldViolation, ServiceError, invalid_argument
from hybridinference.common.settings import ProviderEndpointSettings
from hybridinference.common.v1 import chat_pb2
from hybridinference.provider.v1 import provider_pb2

KIND = "sim"

# Fixed vocabulary: changing it changes every simulated completion, so treat it as frozen.
VOCABULARY: tuple[str, ...] = (
    "the", "a", "model", "token", "stream", "router", "gateway", "latency", "cache", "prompt",
    "answer", "river", "mountain", "signal", "quiet", "bright", "engine", "vector", "garden",
    "window", "orbit", "lantern", "harbor", "copper", "meadow", "pixel", "thunder", "velvet",
    "anchor", "compass", "ember", "falcon", "glacier", "horizon", "island", "jasmine", "kernel",
    "ladder", "marble", "nectar", "oasis", "pepper", "quartz", "ribbon", "saddle", "timber",
    "umbrella", "valley", "walnut", "yonder", "zephyr", "and", "of", "to", "in", "is", "with",
    "on", "for", "it", "as", "at", "by", "from",
)  # fmt: skip


@dataclass(frozen=True)
class Completion:
    """What the simulated model will stream for one request."""

    tokens: list[str]
    finish_reason: chat_pb2.FinishReason.ValueType

    @property
    def text(self) -> str:
        return "".join(self.tokens)


def count_prompt_tokens(messages: Sequence[chat_pb2.ChatMessage]) -> int:
    """Whitespace words of every message plus one per message (a stand-in for role tokens)."""
    return sum(len(message.content.split()) + 1 for message in messages)


def _seed(messages: Sequence[chat_pb2.ChatMessage], seed: int | None) -> int:
    # blake2b, not hash(): str hashes are salted per process, and the text must not change
    # between workers or restarts.
    digest = hashlib.blake2b(digest_size=8)
    for message in messages:
        for part in (message.role, message.name, message.content):
            digest.update(part.encode())
            digest.update(b"\x00")
        digest.update(b"\x01")
    if seed is not None:
        digest.update(seed.to_bytes(8, "little", signed=True))
    return int.from_bytes(digest.digest(), "little")


def sim_tokens(
    messages: Sequence[chat_pb2.ChatMessage], count: int, seed: int | None = None
) -> list[str]:
    """The first ``count`` tokens the simulated model says to this conversation."""
    rng = random.Random(_seed(messages, seed))
    words = [rng.choice(VOCABULARY) for _ in range(count)]
    return [word if i == 0 else f" {word}" for i, word in enumerate(words)]


def _cut_at_stop(tokens: list[str], stops: Sequence[str]) -> list[str] | None:
    """Tokens before the earliest stop sequence (the last one trimmed), or None if none occurs."""
    text = "".join(tokens)
    positions = [text.find(stop) for stop in stops if stop]
    positions = [p for p in positions if p >= 0]
    if not positions:
        return None
    cut = min(positions)
    kept: list[str] = []
    offset = 0
    for token in tokens:
        if offset + len(token) <= cut:
            kept.append(token)
            offset += len(token)
            continue
        # The stop sequence starts inside this token: keep its prefix, if any, as a token.
        if prefix := token[: cut - offset]:
            kept.append(prefix)
        break
    return kept


def plan_completion(
    messages: Sequence[chat_pb2.ChatMessage], sampling: chat_pb2.SamplingParams, output_tokens: int
) -> Completion:
    """The whole completion, decided up front so stop sequences never need look-ahead buffering."""
    limit = output_tokens
    finish: chat_pb2.FinishReason.ValueType = chat_pb2.FINISH_REASON_STOP
    if sampling.HasField("max_tokens"):
        if sampling.max_tokens < 1:
            raise invalid_argument(
                [FieldViolation("sampling.max_tokens", "must be a positive integer")]
            )
        if sampling.max_tokens < output_tokens:
            limit = sampling.max_tokens
            finish = chat_pb2.FINISH_REASON_LENGTH
    seed = sampling.seed if sampling.HasField("seed") else None
    tokens = sim_tokens(messages, limit, seed)
    stopped = _cut_at_stop(tokens, sampling.stop)
    if stopped is not None:
        return Completion(stopped, chat_pb2.FINISH_REASON_STOP)
    return Completion(tokens, finish)


class SimAdapter:
    """ProviderAdapter for one simulated endpoint."""

    kind = KIND

    def __init__(
        self, endpoint: ProviderEndpointSettings, rng: random.Random | None = None
    ) -> None:
        self.endpoint_id = endpoint.id
        self.model = endpoint.model
        self._sim = endpoint.sim
        # Only failure injection, jitter and tails are random; a seeded Random (or the
        # endpoint's sim.seed) makes them repeatable.
        self._rng = rng or random.Random(endpoint.sim.seed)
        # Limited concurrency (like vLLM's max_num_seqs): the rest wait, reported as `waiting`.
        limit = endpoint.sim.max_concurrency
        self._slots = asyncio.Semaphore(limit) if limit is not None else None
        self._waiting = 0

    @contextlib.asynccontextmanager
    async def _slot(self) -> AsyncIterator[None]:
        if self._slots is None:
            yield
            return
        self._waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self._waiting -= 1
        try:
            yield
        finally:
            self._slots.release()

    def _ttft_s(self) -> float:
        """Time to first token: the base, plus uniform jitter, plus the occasional tail."""
        sim = self._sim
        ttft_ms = sim.ttft_ms
        if sim.ttft_jitter_ms:
            ttft_ms += self._rng.uniform(0, sim.ttft_jitter_ms)
        if sim.tail_rate and self._rng.random() < sim.tail_rate:
            ttft_ms += sim.tail_ms
        return ttft_ms / 1000

    async def generate(
        self, request: provider_pb2.GenerateRequest
    ) -> AsyncGenerator[provider_pb2.GenerateResponse, None]:
        async with self._slot(), contextlib.aclosing(self._generate(request)) as events:
            async for event in events:
                yield event

    async def _generate(
        self, request: provider_pb2.GenerateRequest
    ) -> AsyncGenerator[provider_pb2.GenerateResponse, None]:
        completion = plan_completion(request.messages, request.sampling, self._sim.output_tokens)
        if self._rng.random() < self._sim.fail_rate:
            # Fails at once, like a refused connection, so retries elsewhere are cheap.
            raise ServiceError(
                grpc.StatusCode.UNAVAILABLE,
                f"simulated failure of endpoint {self.endpoint_id!r} before the first token",
                reason="injected_failure",
            )
        abort_after = self._sim.abort_after_tokens
        await asyncio.sleep(self._ttft_s())
        for index, token in enumerate(completion.tokens):
            if index:
                await asyncio.sleep(self._sim.itl_ms / 1000)
            # Aborts only a generation that would have gone on: N tokens out, then upstream dies.
            if abort_after is not None and index == abort_after:
                raise ServiceError(
                    grpc.StatusCode.UNAVAILABLE,
                    f"simulated abort of endpoint {self.endpoint_id!r} after {index} tokens",
                    reason="injected_abort",
                )
            yield provider_pb2.GenerateResponse(delta=token, model=self.model if index == 0 else "")
        prompt_tokens = count_prompt_tokens(request.messages)
        completion_tokens = len(completion.tokens)
        yield provider_pb2.GenerateResponse(
            model="" if completion_tokens else self.model,
            usage=chat_pb2.Usage(
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                total_tokens=prompt_tokens + completion_tokens,
            ),
            finish_reason=completion.finish_reason,
        )

    async def status(self) -> provider_pb2.EndpointStatus:
        return provider_pb2.EndpointStatus(
            endpoint=self.endpoint_id,
            provider=self.kind,
            model=self.model,
            healthy=True,
            waiting=self._waiting,
        )

    async def list_models(self) -> list[str]:
        return [self.model]

    async def close(self) -> None:
        """Nothing to release: the simulation holds no connections."""
