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

from hybridinference.common.errors import (
    FieldViolation,
    ServiceError,
    invalid_argument,
    unsupported_parameter,
)
from hybridinference.common.settings import ProviderEndpointSettings
from hybridinference.common.v1 import chat_pb2
from hybridinference.provider.v1 import provider_pb2
from hybridinference.providers.sim_chat import (
    json_content,
    logprobs,
    reasoning_tokens,
    split_json,
    tool_calls,
)

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


# What an image, audio clip or file costs in prompt tokens (OpenAI's low-detail image price).
MEDIA_PART_TOKENS = 85


def count_prompt_tokens(messages: Sequence[chat_pb2.ChatMessage]) -> int:
    """Whitespace words of every message plus one per message (a stand-in for role tokens),
    plus text parts' words, a fixed price per media part and tool-call arguments' words."""
    total = 0
    for message in messages:
        total += len(message.content.split()) + 1
        for part in message.parts:
            if part.WhichOneof("kind") == "text":
                total += len(part.text.split())
            else:
                total += MEDIA_PART_TOKENS
        for call in message.tool_calls:
            total += len(call.function.arguments.split()) + 1
    return total


def _seed(messages: Sequence[chat_pb2.ChatMessage], seed: int | None) -> int:
    # blake2b, not hash(): str hashes are salted per process, and the text must not change
    # between workers or restarts.
    digest = hashlib.blake2b(digest_size=8)
    for message in messages:
        for part in (message.role, message.name, message.content):
            digest.update(part.encode())
            digest.update(b"\x00")
        # Only rich messages add more, so plain conversations keep their text.
        if message.parts or message.tool_calls or message.tool_call_id:
            digest.update(message.SerializeToString(deterministic=True))
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
    messages: Sequence[chat_pb2.ChatMessage],
    sampling: chat_pb2.SamplingParams,
    output_tokens: int,
    seed_override: int | None = None,
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
    if seed_override is not None:
        seed = seed_override
    tokens = sim_tokens(messages, limit, seed)
    stopped = _cut_at_stop(tokens, sampling.stop)
    if stopped is not None:
        return Completion(stopped, chat_pb2.FINISH_REASON_STOP)
    return Completion(tokens, finish)


def _is_rich(request: provider_pb2.GenerateRequest) -> bool:
    """Whether the request asks for more than one choice of plain text."""
    sampling, options = request.sampling, request.options
    return bool(
        options.tools
        or options.response_format.type
        or options.reasoning_effort
        or sampling.logprobs
        or sampling.n > 1
    )


def _refuse_foreign_options(options: chat_pb2.ChatOptions) -> None:
    """Parameters for another provider kind are refused, not ignored."""
    problems = []
    if options.HasField("vllm"):
        problems.append(FieldViolation("vllm", "the simulated provider takes no vLLM parameters"))
    if options.HasField("gemini"):
        problems.append(
            FieldViolation("gemini", "the simulated provider takes no Gemini parameters")
        )
    if options.HasField("extra_body") and options.extra_body.fields:
        names = ", ".join(sorted(options.extra_body.fields))
        problems.append(FieldViolation(names, "the simulated provider takes no extra fields"))
    if problems:
        raise unsupported_parameter(problems)


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
        _refuse_foreign_options(request.options)
        if _is_rich(request):
            async for event in self._generate_rich(request):
                yield event
            return
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

    async def _generate_rich(
        self, request: provider_pb2.GenerateRequest
    ) -> AsyncGenerator[provider_pb2.GenerateResponse, None]:
        """Tools, JSON, reasoning, logprobs or several choices: choices one after the other,
        each ending with its finish reason, then a final event with usage."""
        sampling = request.sampling
        if self._rng.random() < self._sim.fail_rate:
            raise ServiceError(
                grpc.StatusCode.UNAVAILABLE,
                f"simulated failure of endpoint {self.endpoint_id!r} before the first token",
                reason="injected_failure",
            )
        seed = sampling.seed if sampling.HasField("seed") else None
        await asyncio.sleep(self._ttft_s())
        generated = reasoning_total = 0
        model_sent = False
        for index in range(max(sampling.n, 1)):
            # Choice 0 says what a plain request would; the others vary the seed.
            choice_seed = seed if index == 0 else (seed or 0) * 31 + index
            rng = random.Random(_seed(request.messages, choice_seed))
            events = list(self._choice_events(request, index, rng))
            for number, event in enumerate(events):
                if number or index:
                    await asyncio.sleep(self._sim.itl_ms / 1000)
                if not model_sent:
                    event.model = self.model
                    model_sent = True
                generated += 1
                if event.reasoning:
                    reasoning_total += 1
                yield event
        prompt_tokens = count_prompt_tokens(request.messages)
        yield provider_pb2.GenerateResponse(
            usage=chat_pb2.Usage(
                prompt_tokens=prompt_tokens,
                completion_tokens=generated,
                total_tokens=prompt_tokens + generated,
                reasoning_tokens=reasoning_total,
            )
        )

    def _choice_events(
        self, request: provider_pb2.GenerateRequest, index: int, rng: random.Random
    ) -> list[provider_pb2.GenerateResponse]:
        sampling, options = request.sampling, request.options
        events = [
            provider_pb2.GenerateResponse(index=index, reasoning=token)
            for token in sim_tokens(
                request.messages, reasoning_tokens(options), rng.randrange(2**62)
            )
        ]
        calls = tool_calls(request.messages, options, rng)
        if calls:
            for call_index, call in enumerate(calls):
                pieces = split_json(call.function.arguments)
                for number, piece in enumerate(pieces):
                    fragment = chat_pb2.ToolCallDelta(index=call_index, arguments=piece)
                    if number == 0:
                        fragment.id, fragment.type = call.id, call.type
                        fragment.name = call.function.name
                    events.append(provider_pb2.GenerateResponse(index=index, tool_calls=[fragment]))
            events.append(
                provider_pb2.GenerateResponse(
                    index=index, finish_reason=chat_pb2.FINISH_REASON_TOOL_CALLS
                )
            )
            return events
        completion = plan_completion(
            request.messages,
            sampling,
            self._sim.output_tokens,
            None if index == 0 else rng.randrange(2**62),
        )
        tokens = completion.tokens
        finish = completion.finish_reason
        if structured := json_content(options, completion.tokens, rng):
            tokens, finish = split_json(structured), chat_pb2.FINISH_REASON_STOP
        top = sampling.top_logprobs if sampling.HasField("top_logprobs") else 0
        scores = logprobs(tokens, top, rng, VOCABULARY) if sampling.logprobs else []
        for number, token in enumerate(tokens):
            event = provider_pb2.GenerateResponse(index=index, delta=token)
            if scores:
                event.logprobs.content.append(scores[number])
            events.append(event)
        events.append(provider_pb2.GenerateResponse(index=index, finish_reason=finish))
        return events

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
