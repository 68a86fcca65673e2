"""The vllm adapter's in-process mode: the worker hosts vLLM's async engine, no HTTP hop.

Used when the endpoint has ``vllm_engine`` settings and ``vllm`` is importable in the worker's
Python. A request goes through vLLM's own chat-completions layer (``OpenAIServingChat``, set up
by vLLM's ``init_app_state`` from the same options ``vllm serve`` takes), not a re-implementation
of it: the chat template with tools, the configured tool parser, the configured reasoning parser,
structured outputs (response_format, a named tool_choice, ``structured_outputs``), logprobs, n and
vLLM's default max_tokens (what is left of the context, not ``SamplingParams``' 16) behave exactly
as on a vLLM server, and a greedy request gives the same tokens through either mode. The request
body is the one the HTTP mode sends (``openai_wire.chat_body``), and the chunks vLLM's layer yields
are read by the same reader (``openai_stream``), so both modes relay the same events. Closing or
cancelling the stream closes vLLM's generator, which aborts the request inside the engine. Load
comes from the engine's own Prometheus collectors in this process.

vllm is imported lazily (``importlib``), so this module loads, and type-checks, without it.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import uuid
from collections.abc import AsyncGenerator
from typing import Any

from hybridinference.common.errors import ServiceError
from hybridinference.common.settings import (
    ConfigError,
    ProviderEndpointSettings,
    VllmEngineSettings,
)
from hybridinference.provider.v1 import provider_pb2
from hybridinference.providers import upstream_errors as ue
from hybridinference.providers.deadline import FirstOutputDeadline
from hybridinference.providers.openai_stream import openai_events, reader
from hybridinference.providers.openai_wire import COMPATIBLE, chat_body
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


def _flag(name: str, value: Any) -> list[str]:
    """One ``vllm serve`` option from its engine-argument name and value."""
    option = "--" + name.replace("_", "-")
    if value is True:
        return [option]
    if value is False:
        return [f"--no-{name.replace('_', '-')}"]
    if isinstance(value, dict | list):
        return [option, json.dumps(value)]
    return [option, str(value)]


def serve_argv(settings: VllmEngineSettings, served_name: str) -> list[str]:
    """The ``vllm serve`` command line this engine is configured like."""
    argv = ["--model", settings.model_path, "--served-model-name", served_name]
    argv += ["--dtype", settings.dtype]
    if settings.enforce_eager:
        argv.append("--enforce-eager")
    if settings.max_model_len is not None:
        argv += ["--max-model-len", str(settings.max_model_len)]
    if settings.tool_call_parser:
        argv += ["--enable-auto-tool-choice", "--tool-call-parser", settings.tool_call_parser]
    if settings.reasoning_parser:
        argv += ["--reasoning-parser", settings.reasoning_parser]
    for name, value in settings.extra_args.items():
        argv += _flag(name, value)
    return argv


def serve_args(settings: VllmEngineSettings, served_name: str) -> Any:
    """vLLM's own parsed server arguments (every default as ``vllm serve`` has it)."""
    cli_args = importlib.import_module("vllm.entrypoints.launchers.cli_args")
    argparse_utils = importlib.import_module("vllm.utils.argparse_utils")
    parser = cli_args.make_arg_parser(argparse_utils.FlexibleArgumentParser())
    args = parser.parse_args(serve_argv(settings, served_name))
    cli_args.validate_parsed_serve_args(args)
    # The engine's Prometheus collectors are the adapter's load source.
    args.disable_log_stats = False
    return args


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
        self._chat: Any = None
        self._request_type: Any = None
        self._error_type: Any = None
        self._starting: asyncio.Lock | None = None
        self._hit_rate = HitRateWindow()

    async def engine(self) -> Any:
        """The engine, started on first use (inside the running loop, as AsyncLLM requires),
        with vLLM's chat-completions layer over it."""
        if self._engine is not None:
            return self._engine
        if self._starting is None:
            self._starting = asyncio.Lock()
        async with self._starting:
            if self._engine is None:
                args = serve_args(self._engine_settings, self.model)
                async_llm = importlib.import_module("vllm.v1.engine.async_llm").AsyncLLM
                engine_args = self._vllm.AsyncEngineArgs.from_cli_args(args)
                log.info("starting in-process vLLM engine", extra={"endpoint": self.endpoint_id})
                engine = async_llm.from_engine_args(engine_args)
                state = importlib.import_module("starlette.datastructures").State()
                app_state = importlib.import_module(
                    "vllm.entrypoints.launchers.api_server.app_state"
                )
                try:
                    tasks = await engine.get_supported_tasks()
                    await app_state.init_app_state(engine, state, args, tasks)
                except BaseException:
                    engine.shutdown()
                    raise
                protocol = importlib.import_module(
                    "vllm.entrypoints.openai.chat_completion.protocol"
                )
                self._request_type = protocol.ChatCompletionRequest
                self._error_type = importlib.import_module(
                    "vllm.entrypoints.serve.engine.protocol"
                ).ErrorResponse
                self._chat = state.openai_serving_chat
                self._engine = engine
        return self._engine

    def _rejected(self, status: int, message: str, code: Any, param: Any) -> ServiceError:
        return ue.http_error(
            self.endpoint_id,
            status,
            message,
            code=code if isinstance(code, str) else None,
            param=param if isinstance(param, str) else None,
        )

    def _invalid(self, error: Any) -> ServiceError:
        """A request vLLM's request model refused (pydantic), naming the first field."""
        problems = error.errors()
        first = problems[0] if problems else {}
        field = ".".join(str(part) for part in first.get("loc", ()) if part != "body")
        message = "; ".join(str(p.get("msg", "")) for p in problems) or str(error)
        return self._rejected(400, f"vLLM rejected the request: {message}", None, field or None)

    async def generate(
        self, request: provider_pb2.GenerateRequest
    ) -> AsyncGenerator[provider_pb2.GenerateResponse, None]:
        body = chat_body(self.model, request, COMPATIBLE)
        await self.engine()
        # Unique per attempt: the router may retry a request id on the same endpoint.
        body["request_id"] = f"{request.request_id or 'hi'}-{uuid.uuid4().hex[:8]}"
        try:
            chat_request = self._request_type.model_validate(body)
        except ValueError as error:
            # pydantic's ValidationError is a ValueError.
            if hasattr(error, "errors"):
                raise self._invalid(error) from None
            raise self._rejected(400, f"vLLM rejected the request: {error}", None, None) from None
        deadline = FirstOutputDeadline(self._settings)
        result = await self._chat.create_chat_completion(chat_request, None)
        if isinstance(result, self._error_type):
            failure = result.error
            status = failure.code if isinstance(failure.code, int) else 400
            # vLLM's `type` is an exception name, not an OpenAI code: the message decides
            # (a context overflow is recognised by its wording).
            raise self._rejected(status, str(failure.message), None, failure.param)
        try:
            async for event in openai_events(
                reader(result.__aiter__()), self.model, deadline, self.endpoint_id, str
            ):
                yield event
        finally:
            # Closing vLLM's generator aborts the request inside the engine (also on
            # cancellation, which closes this generator).
            await result.aclose()

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
            self._chat = None
