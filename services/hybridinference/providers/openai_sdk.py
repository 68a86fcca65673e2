"""The openai adapter: OpenAI's API through the official ``AsyncOpenAI`` SDK, streaming with usage.

One ``AsyncOpenAI`` per pooled key, all sharing one aiohttp-backed HTTP client (keep-alive
connections are per host, not per key). The SDK's own retries are off: a 429 must reach the key
pool (cool down, next key) and the router (another endpoint) at once, not after hidden back-offs.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncGenerator, Mapping
from typing import Any

import httpx2
import openai

from hybridinference.common.errors import ServiceError
from hybridinference.common.settings import ProviderEndpointSettings
from hybridinference.provider.v1 import provider_pb2
from hybridinference.providers import upstream_errors as ue
from hybridinference.providers.deadline import FirstOutputDeadline
from hybridinference.providers.keys import KeyPool, required_keys, with_key_rotation
from hybridinference.providers.openai_stream import openai_events, reader
from hybridinference.providers.openai_wire import OPENAI, chat_body

log = logging.getLogger(__name__)

# The SDK logs request details at DEBUG; keep it (and its HTTP stack) quiet even when the worker
# runs at DEBUG, so nothing near an Authorization header reaches the logs.
for _name in ("openai", "httpx", "httpx2", "httpcore"):
    logging.getLogger(_name).setLevel(logging.WARNING)

# The keyword parameters of the SDK's chat.completions.create.
_SDK_PARAMS = frozenset(
    inspect.signature(openai.resources.chat.completions.AsyncCompletions.create).parameters
) - {"self", "extra_body", "extra_headers", "extra_query", "timeout"}


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

    def _map(self, error: Exception) -> ServiceError:
        """The one translation of SDK exceptions into the error table (opening a stream and
        listing models; a stream's body is read by ``openai_stream``)."""
        if isinstance(error, openai.APIStatusError):
            body = error.body
            message = body.get("message") if isinstance(body, dict) else None
            return ue.http_error(
                self.endpoint_id,
                error.status_code,
                self._redact(str(message or error.message)),
                dict(error.response.headers),
                code=error.code,
                param=error.param,
            )
        if isinstance(error, openai.APITimeoutError):
            return ue.upstream_error(ue.FIRST_TOKEN_TIMEOUT, self.endpoint_id, "request timed out")
        if isinstance(error, openai.APIConnectionError):
            cause = error.__cause__ or error
            return ue.upstream_error(ue.CONNECT_FAILED, self.endpoint_id, self._redact(str(cause)))
        if isinstance(error, openai.APIError):
            return ue.http_error(self.endpoint_id, 500, self._redact(str(error.message)))
        return ue.upstream_error(ue.MALFORMED, self.endpoint_id, self._redact(str(error)))

    async def _open(
        self, request: provider_pb2.GenerateRequest, deadline: FirstOutputDeadline
    ) -> Any:
        """The SDK's streaming response (status 200, body unread), rotating keys on 429/401."""
        body = chat_body(self.model, request, OPENAI)
        # The SDK's own parameters by name; anything else (a passthrough field) as extra_body.
        extra_body = {name: body.pop(name) for name in list(body) if name not in _SDK_PARAMS}
        extra_headers = {"X-Request-Id": request.request_id} if request.request_id else None

        async def attempt(key: str | None) -> Any:
            assert key is not None
            try:
                async with deadline.scope(False):
                    # Built as a dict: the SDK's typed overloads cannot see through **body.
                    create: Any = self._client(key).chat.completions.with_streaming_response.create
                    return await create(
                        **body, extra_body=extra_body or None, extra_headers=extra_headers
                    ).__aenter__()
            except TimeoutError:
                raise deadline.error(False) from None
            except openai.OpenAIError as sdk_error:
                raise self._map(sdk_error) from None

        return await with_key_rotation(self._keys, self.endpoint_id, attempt)

    async def generate(
        self, request: provider_pb2.GenerateRequest
    ) -> AsyncGenerator[provider_pb2.GenerateResponse, None]:
        deadline = FirstOutputDeadline(self._settings)
        response = await self._open(request, deadline)
        # The SDK sends the request and maps its errors; the body is read raw, through the same
        # reader as the HTTP adapters (one assembler for OpenAI-format chunks, no pydantic model
        # per chunk).
        read = reader(response.http_response.aiter_bytes().__aiter__())
        try:
            # The SDK client's read timeout is the idle gap between reads.
            async for event in openai_events(
                read,
                self.model,
                deadline,
                self.endpoint_id,
                self._redact,
                (httpx2.TimeoutException,),
            ):
                yield event
        finally:
            # Closes the HTTP response: on a mid-stream exit this drops the connection, which is
            # how the upstream learns to stop generating.
            await response.close()

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
            raise self._map(error) from None
        return [model.id async for model in page]

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None
        self._clients.clear()
