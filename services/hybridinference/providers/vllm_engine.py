"""The vllm adapter's in-process mode: the worker hosts vLLM's async engine, no HTTP hop.

Used when the endpoint has ``vllm_engine`` settings and ``vllm`` is importable in the worker's
Python. The prompt is rendered exactly as vLLM's OpenAI server renders a chat request (the
tokenizer's chat template to text, then tokens without extra special tokens), so a greedy request
gives the same tokens through either mode. Deltas come straight from the engine
(``RequestOutputKind.DELTA``); closing or cancelling the stream aborts the request inside the
engine. Load comes from the engine's own Prometheus collectors in this process.

vllm is imported lazily (``importlib``), so this module loads, and type-checks, without it.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import uuid
from collections.abc import AsyncGenerator
from typing import Any

import grpc

from hybridinference.common.errors import ServiceError
from hybridinference.common.settings import (
    ConfigError,
    ProviderEndpointSettings,
    VllmEngineSettings,
)
from hybridinference.common.v1 import chat_pb2
from hybridinference.provider.v1 import provider_pb2
from hybridinference.providers import upstream_errors as ue
from hybridinference.providers.openai_wire import FINISH_REASONS, chat_messages
from hybridinference.providers.sampling import sampling_options
from hybridinference.providers.vllm_metrics import HitRateWindow, parse_load

log = logging.getLogger(__name__)


def import_vllm() -> Any:
    try:
        return importlib.import_module("vllm")
    except ImportError as error:
        raise ConfigError(
            f"vllm_engine mode needs the vllm package in this Python ({error}); "
            "run the worker from the vLLM virtualenv (tests/vllm/install_vllm.sh) or use a "
            "vLLM server with base_url instead"
        ) from None


def engine_args(vllm: Any, settings: VllmEngineSettings, served_name: str) -> Any:
    options: dict[str, Any] = {
        "model": settings.model_path,
        "served_model_name": [served_name],
        "dtype": settings.dtype,
        "enforce_eager": settings.enforce_eager,
        # The engine's Prometheus collectors are the adapter's load source.
        "disable_log_stats": False,
        **settings.extra_args,
    }
    if settings.max_model_len is not None:
        options["max_model_len"] = settings.max_model_len
    return vllm.AsyncEngineArgs(**options)


def sampling_params(vllm: Any, sampling: chat_pb2.SamplingParams) -> Any:
    """vLLM SamplingParams with the OpenAI server's defaults for anything unset."""
    output_kind = importlib.import_module("vllm.sampling_params").RequestOutputKind.DELTA
    options = {"output_kind": output_kind, **sampling_options(sampling)}
    return vllm.SamplingParams(**options)


class VllmEngineAdapter:
    """ProviderAdapter hosting one vLLM engine in this process."""

    kind = "vllm"

    def __init__(self, endpoint: ProviderEndpointSettings) -> None:
        if endpoint.vllm_engine is None:
            raise ConfigError(f"endpoint {endpoint.id!r}: vllm_engine settings are required")
        self.endpoint_id = endpoint.id
        self.model = endpoint.model
        self._settings = endpoint
        self._engine_settings = endpoint.vllm_engine
        self._vllm = import_vllm()
        self._engine: Any = None
        self._tokenizer: Any = None
        self._starting: asyncio.Lock | None = None
        self._hit_rate = HitRateWindow()

    async def engine(self) -> Any:
        """The engine, started on first use (inside the running loop, as AsyncLLM requires)."""
        if self._engine is not None:
            return self._engine
        if self._starting is None:
            self._starting = asyncio.Lock()
        async with self._starting:
            if self._engine is None:
                async_llm = importlib.import_module("vllm.v1.engine.async_llm").AsyncLLM
                args = engine_args(self._vllm, self._engine_settings, self.model)
                log.info("starting in-process vLLM engine", extra={"endpoint": self.endpoint_id})
                engine = async_llm.from_engine_args(args)
                self._tokenizer = engine.get_tokenizer()
                self._engine = engine
        return self._engine

    def prompt_token_ids(self, request: provider_pb2.GenerateRequest) -> list[int]:
        """Rendered like vLLM's chat endpoint: template to text, then tokens, no extra BOS."""
        text = self._tokenizer.apply_chat_template(
            chat_messages(request), tokenize=False, add_generation_prompt=True
        )
        return list(self._tokenizer.encode(text, add_special_tokens=False))

    async def generate(
        self, request: provider_pb2.GenerateRequest
    ) -> AsyncGenerator[provider_pb2.GenerateResponse, None]:
        engine = await self.engine()
        try:
            prompt_ids = self.prompt_token_ids(request)
            params = sampling_params(self._vllm, request.sampling)
        except (ValueError, TypeError) as error:
            raise ServiceError(
                grpc.StatusCode.INVALID_ARGUMENT, f"vLLM rejected the request: {error}"
            ) from None
        # Unique per attempt: the router may retry a request id on the same endpoint.
        request_id = f"{request.request_id or 'hi'}-{uuid.uuid4().hex[:8]}"
        streamed_tokens = 0
        finish = chat_pb2.FINISH_REASON_UNSPECIFIED
        cached = 0
        first = True
        try:
            stream = engine.generate({"prompt_token_ids": prompt_ids}, params, request_id)
            async for output in stream:
                if output.num_cached_tokens:
                    cached = int(output.num_cached_tokens)
                completion = output.outputs[0]
                streamed_tokens += len(completion.token_ids)
                if completion.finish_reason:
                    finish = FINISH_REASONS.get(
                        completion.finish_reason, chat_pb2.FINISH_REASON_STOP
                    )
                if completion.text:
                    event = provider_pb2.GenerateResponse(delta=completion.text)
                    if first:
                        event.model = self.model
                        first = False
                    yield event
        except ValueError as error:
            # vLLM validates the prompt (length against max_model_len and the like) here.
            raise ServiceError(
                grpc.StatusCode.INVALID_ARGUMENT, f"vLLM rejected the request: {error}"
            ) from None
        except Exception as error:
            if isinstance(error, ServiceError):
                raise
            raise ue.upstream_error(
                ue.DISCONNECTED, self.endpoint_id, f"vLLM engine failed: {error}"
            ) from None
        # Cancellation: vLLM's generate aborts the request itself when its generator is closed
        # or cancelled (CancelledError / GeneratorExit), which happens when this one is.
        prompt_tokens = len(prompt_ids)
        final = provider_pb2.GenerateResponse(
            usage=chat_pb2.Usage(
                prompt_tokens=prompt_tokens,
                completion_tokens=streamed_tokens,
                total_tokens=prompt_tokens + streamed_tokens,
                cached_tokens=cached,
            ),
            finish_reason=finish or chat_pb2.FINISH_REASON_STOP,
        )
        if first:
            final.model = self.model
        yield final

    async def status(self) -> provider_pb2.EndpointStatus:
        status = provider_pb2.EndpointStatus(
            endpoint=self.endpoint_id, provider=self.kind, model=self.model, healthy=True
        )
        if self._engine is None:
            status.detail = "engine starts on the first request"
            return status
        if self._engine.errored:
            status.healthy = False
            status.detail = "vLLM engine errored"
            return status
        prometheus = importlib.import_module("prometheus_client")
        load = parse_load(prometheus.generate_latest().decode())
        status.waiting = load.waiting
        status.upstream_running = load.running
        status.kv_cache_usage = load.kv_cache_usage
        status.prefix_cache_hit_rate = self._hit_rate.update(load)
        return status

    async def list_models(self) -> list[str]:
        return [self.model]

    async def close(self) -> None:
        if self._engine is not None:
            self._engine.shutdown()
            self._engine = None
