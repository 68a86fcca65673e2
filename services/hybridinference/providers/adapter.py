"""The one interface every provider adapter fits, and the factory keyed by the worker's kind.

An adapter speaks to one upstream endpoint (a simulated model, a vLLM server, a cloud API). The
servicer owns everything that is about calls through this worker (running, completed, cancelled,
failed counters); the adapter owns what only the upstream knows (health, queue depth, KV cache).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from typing import Protocol, runtime_checkable

from hybridinference.common.settings import ConfigError, ProviderEndpointSettings
from hybridinference.common.settings_base import PROVIDER_KINDS
from hybridinference.provider.v1 import provider_pb2


@runtime_checkable
class ProviderAdapter(Protocol):
    """One upstream endpoint.

    Contract for ``generate``:
      * the first event carries ``model``; the last event carries ``usage``; each choice's
        last event (its ``index``; 0 unless n > 1) carries its ``finish_reason`` — for n = 1
        the last event has both;
      * content, ``reasoning``, ``tool_calls`` fragments, ``refusal`` and ``logprobs`` go out as
        they come; ``usage.completion_tokens`` counts every generated token, reasoning included
        (and ``usage.reasoning_tokens`` those of reasoning);
      * every set field of ``request.options`` and ``request.sampling`` is honoured or the call
        fails with INVALID_ARGUMENT (``unsupported_parameter``) naming it — never ignored;
      * errors are raised as ``common.errors.ServiceError`` (UNAVAILABLE for upstream
        failures, so the router may retry before the first token);
      * cancelling the consuming task (``asyncio.CancelledError``) or closing the iterator
        (``aclose``) must stop the upstream generation promptly.
    """

    @property
    def endpoint_id(self) -> str:
        """The endpoint id from the settings."""
        ...

    @property
    def kind(self) -> str:
        """Provider kind, as reported in EndpointStatus.provider."""
        ...

    @property
    def model(self) -> str:
        """The upstream's name for the model."""
        ...

    def generate(
        self, request: provider_pb2.GenerateRequest
    ) -> AsyncGenerator[provider_pb2.GenerateResponse, None]:
        """Streams one generation (an async generator, so the caller can ``aclose`` it)."""
        ...

    async def status(self) -> provider_pb2.EndpointStatus:
        """Health and upstream load: endpoint, provider, model, healthy, detail, waiting,
        kv_cache_usage. Worker-side counters are filled in by the servicer. An unreachable
        upstream is reported as ``healthy=False`` with a ``detail``, not raised."""
        ...

    async def list_models(self) -> list[str]:
        """Model names the upstream serves."""
        ...

    async def close(self) -> None:
        """Releases connections and sessions; called once when the worker stops."""
        ...


def _sim(endpoint: ProviderEndpointSettings) -> ProviderAdapter:
    from hybridinference.providers.sim import SimAdapter

    return SimAdapter(endpoint)


def _vllm(endpoint: ProviderEndpointSettings) -> ProviderAdapter:
    if endpoint.vllm_engine is not None:
        from hybridinference.providers.vllm_engine import VllmEngineAdapter

        return VllmEngineAdapter(endpoint)
    from hybridinference.providers.vllm_http import VllmHttpAdapter

    return VllmHttpAdapter(endpoint)


def _openai_compatible(endpoint: ProviderEndpointSettings) -> ProviderAdapter:
    from hybridinference.providers.http_chat import OpenAICompatibleAdapter

    return OpenAICompatibleAdapter(endpoint)


def _openai(endpoint: ProviderEndpointSettings) -> ProviderAdapter:
    from hybridinference.providers.openai_sdk import OpenAIAdapter

    return OpenAIAdapter(endpoint)


def _gemini(endpoint: ProviderEndpointSettings) -> ProviderAdapter:
    from hybridinference.providers.gemini import GeminiAdapter

    return GeminiAdapter(endpoint)


# One builder per provider kind of the settings (common/settings_base.py; a test checks that
# they match). Imports stay inside the builders so a worker only loads its own upstream SDK.
BUILDERS: dict[str, Callable[[ProviderEndpointSettings], ProviderAdapter]] = {
    "sim": _sim,
    "vllm": _vllm,
    "openai_compatible": _openai_compatible,
    "openai": _openai,
    "gemini": _gemini,
}


def build_adapter(kind: str, endpoint: ProviderEndpointSettings) -> ProviderAdapter:
    """Builds the adapter of ``kind`` for one endpoint of a worker."""
    builder = BUILDERS.get(kind)
    if builder is None:
        known = ", ".join(PROVIDER_KINDS)
        raise ConfigError(f"unknown provider kind {kind!r}; known kinds: {known}")
    return builder(endpoint)
