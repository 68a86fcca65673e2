"""The openai adapter: OpenAI's API through the official ``AsyncOpenAI`` SDK, streaming with usage.

One ``AsyncOpenAI`` per pooled key, all sharing one aiohttp-backed HTTP client (keep-alive
connections are per host, not per key). The SDK's own retries are off: a 429 must reach the key
pool (cool down, next key) and the router (another endpoint) at once, not after hidden back-offs.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Mapping
from typing import Any

import openai

from hybridinference.common.errors import ServiceError
from hybridinference.common.settings import ProviderEndpointSettings
from hybridinference.provider.v1 import provider_pb2
from hybridinference.providers import upstream_errors as ue
from hybridinference.providers.keys import KeyPool, required_keys
from hybridinference.providers.openai_wire import (
    MalformedChunk,
    StreamAssembler,
    chat_messages,
    sampling_options,
)

log = logging.getLogger(__name__)

# The SDK logs request details at DEBUG; keep it (and its HTTP stack) quiet even when the worker
# runs at DEBUG, so nothing near an Authorization header reaches the logs.
for _name in ("openai", "httpx", "httpx2", "httpcore"):
    logging.getLogger(_name).setLevel(logging.WARNING)


def feed_chunk(assembler: StreamAssembler, chunk: Any) -> provider_pb2.GenerateResponse | None:
    """One SDK ``ChatCompletionChunk`` into the assembler, by attribute (no per-chunk dump)."""
    event = None
    try:
        choices = chunk.choices
        if choices:
            choice = choices[0]
            delta = choice.delta
            content = delta.content if delta is not None else None
            if content:
                if not isinstance(content, str):
                    raise MalformedChunk("delta.content is not a string")
                event = assembler.text(content)
            if choice.finish_reason:
                assembler.finish(str(choice.finish_reason))
        usage = chunk.usage
        if usage is not None:
            details = usage.prompt_tokens_details
            cached = (details.cached_tokens or 0) if details is not None else 0
            assembler.usage(int(usage.prompt_tokens), int(usage.completion_tokens), int(cached))
    except (AttributeError, IndexError, TypeError, ValueError) as error:
        raise MalformedChunk(f"bad chunk: {error}") from None
    return event


class OpenAIAdapter:
    """ProviderAdapter for one OpenAI model with a pool of API keys."""

    kind = "openai"

    def __init__(
        self, endpoint: ProviderEndpointSettings, environ: Mapping[str, str] | None = None
    ) -> None:
        keys = required_keys(endpoint.id, "openai", endpoint.api_key_env, "OPENAI_API_KEY", environ)
        self.endpoint_id = endpoint.id
        self.model = endpoint.model
        self._settings = endpoint
        self._keys = KeyPool(endpoint.id, keys, endpoint.key_cooldown_s)
        self._secrets = keys
        self._http: Any = None
        self._clients: dict[str, openai.AsyncOpenAI] = {}

    def _client(self, key: str) -> openai.AsyncOpenAI:
        client = self._clients.get(key)
        if client is None:
            settings = self._settings
            if self._http is None:
                # aiohttp under the SDK: a third of httpx's CPU per request, measured here.
                self._http = openai.DefaultAioHttpClient(
                    timeout=openai.Timeout(
                        None, connect=settings.connect_timeout_s, read=settings.idle_timeout_s
                    )
                )
            client = openai.AsyncOpenAI(
                api_key=key,
                base_url=settings.base_url or None,
                max_retries=0,
                http_client=self._http,
            )
            self._clients[key] = client
        return client

    def _redact(self, text: str) -> str:
        return ue.redact(text, self._secrets)

    def _map(self, error: Exception, streamed: int) -> ServiceError:
        """The one translation of SDK exceptions into the error table."""
        if isinstance(error, openai.APIStatusError):
            return ue.http_error(
                self.endpoint_id,
                error.status_code,
                self._redact(str(error.message)),
                dict(error.response.headers),
            )
        if isinstance(error, openai.APITimeoutError):
            failure = ue.IDLE_TIMEOUT if streamed else ue.FIRST_TOKEN_TIMEOUT
            return ue.upstream_error(failure, self.endpoint_id, "request timed out")
        if isinstance(error, openai.APIConnectionError):
            failure = ue.DISCONNECTED if streamed else ue.CONNECT_FAILED
            cause = error.__cause__ or error
            return ue.upstream_error(failure, self.endpoint_id, self._redact(str(cause)))
        if isinstance(error, openai.APIError):
            # An error event inside a 200 stream.
            return ue.http_error(self.endpoint_id, 500, self._redact(str(error.message)))
        return ue.upstream_error(ue.MALFORMED, self.endpoint_id, self._redact(str(error)))

    async def _open(self, request: provider_pb2.GenerateRequest, deadline: float) -> Any:
        options = sampling_options(request.sampling, "max_completion_tokens")
        extra_headers = {"X-Request-Id": request.request_id} if request.request_id else None
        for attempt in range(len(self._keys)):
            key = self._keys.acquire()
            try:
                async with asyncio.timeout_at(deadline):
                    # Built as a dict: the SDK's typed overloads cannot see through **options.
                    create: Any = self._client(key).chat.completions.create
                    return await create(
                        model=self.model,
                        messages=chat_messages(request),
                        stream=True,
                        stream_options={"include_usage": True},
                        extra_headers=extra_headers,
                        **options,
                    )
            except TimeoutError:
                raise self._first_token_timeout() from None
            except openai.OpenAIError as sdk_error:
                error = self._map(sdk_error, 0)
                status = getattr(sdk_error, "status_code", None)
                if status in (401, 429):
                    self._keys.cool_down(key, error.retry_after_s)
                    if attempt + 1 < len(self._keys):
                        log.warning(
                            "upstream key rejected; trying the next pooled key",
                            extra={"endpoint": self.endpoint_id, "upstream_status": status},
                        )
                        continue
                raise error from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _first_token_timeout(self) -> ServiceError:
        settings = self._settings
        return ue.timeout_error(
            self.endpoint_id, False, settings.first_token_timeout_s, settings.idle_timeout_s
        )

    async def generate(
        self, request: provider_pb2.GenerateRequest
    ) -> AsyncGenerator[provider_pb2.GenerateResponse, None]:
        deadline = asyncio.get_running_loop().time() + self._settings.first_token_timeout_s
        stream = await self._open(request, deadline)
        assembler = StreamAssembler(self.model)
        chunks = stream.__aiter__()
        try:
            while True:
                try:
                    if assembler.deltas:
                        chunk = await chunks.__anext__()
                    else:
                        async with asyncio.timeout_at(deadline):
                            chunk = await chunks.__anext__()
                except StopAsyncIteration:
                    break
                except TimeoutError:
                    raise self._first_token_timeout() from None
                except openai.OpenAIError as error:
                    raise self._map(error, assembler.deltas) from None
                except ValueError as error:
                    # The SDK's JSON decoding of a broken chunk.
                    raise ue.upstream_error(
                        ue.MALFORMED, self.endpoint_id, f"malformed stream chunk: {error}"
                    ) from None
                try:
                    event = feed_chunk(assembler, chunk)
                except MalformedChunk as error:
                    raise ue.upstream_error(
                        ue.MALFORMED, self.endpoint_id, f"malformed stream chunk: {error}"
                    ) from None
                if event is not None:
                    yield event
            if not assembler.finished:
                raise ue.upstream_error(
                    ue.DISCONNECTED,
                    self.endpoint_id,
                    f"stream ended before it finished (after {assembler.deltas} chunks)",
                )
        finally:
            # Closes the HTTP response: on a mid-stream exit this drops the connection, which is
            # how the upstream learns to stop generating.
            await stream.close()
        yield assembler.final()

    async def status(self) -> provider_pb2.EndpointStatus:
        # No network probe: polling a paid API every few seconds costs quota. Health here is
        # whether a key is usable; failures of real calls reach the router's breakers.
        usable = self._keys.usable()
        status = provider_pb2.EndpointStatus(
            endpoint=self.endpoint_id,
            provider=self.kind,
            model=self.model,
            healthy=usable > 0,
        )
        if not usable:
            status.detail = f"all {len(self._keys)} API keys are cooling down after 429/401"
        return status

    async def list_models(self) -> list[str]:
        key = self._keys.acquire()
        try:
            page = await self._client(key).models.list()
        except openai.OpenAIError as error:
            raise self._map(error, 0) from None
        return [model.id async for model in page]

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None
        self._clients.clear()
