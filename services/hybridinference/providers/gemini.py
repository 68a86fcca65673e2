"""The gemini adapter: Google's Gemini API through the official ``google-genai`` SDK, streaming.

The translation of the chat contract (messages, tools, structured output, thinking; chunks back
into events) is ``gemini_wire``; this module is the transport: keys, deadlines, errors,
cancellation. Usage metadata becomes usage: prompt = ``prompt_token_count``; completion =
``candidates_token_count`` plus ``thoughts_token_count`` (thinking tokens are billed as output,
and are the reasoning tokens); cached = ``cached_content_token_count``.

Timeouts: the SDK only knows a total timeout, so the first-token deadline (which includes the
connect) and the idle gap between chunks are enforced here with asyncio timers.
"""

from __future__ import annotations

import contextvars
import logging
import types as types_
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import Any

import aiohttp
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from hybridinference.common.errors import ServiceError
from hybridinference.common.settings import ProviderEndpointSettings
from hybridinference.provider.v1 import provider_pb2
from hybridinference.providers import upstream_errors as ue
from hybridinference.providers.deadline import FirstOutputDeadline
from hybridinference.providers.gemini_wire import (
    GeminiAssembler,
    Refusals,
    gemini_config,
    gemini_contents,
)
from hybridinference.providers.keys import KeyPool, required_keys, with_key_rotation

log = logging.getLogger(__name__)

# The HTTP responses of the request being opened in this task (see GeminiAdapter._open).
_responses: contextvars.ContextVar[list[aiohttp.ClientResponse] | None] = contextvars.ContextVar(
    "gemini_responses", default=None
)


async def _remember_response(
    session: aiohttp.ClientSession,
    context: types_.SimpleNamespace,
    params: aiohttp.TraceRequestEndParams,
) -> None:
    holder = _responses.get()
    if holder is not None:
        holder.append(params.response)


def _close_all(responses: list[aiohttp.ClientResponse]) -> None:
    for response in responses:
        response.close()


def _headers_of(error: genai_errors.APIError) -> dict[str, str]:
    response = getattr(error, "response", None)
    headers = getattr(response, "headers", None)
    try:
        return {str(k): str(v) for k, v in dict(headers or {}).items()}
    except (TypeError, ValueError):
        return {}


class GeminiAdapter:
    """ProviderAdapter for one Gemini model with a pool of API keys."""

    kind = "gemini"

    def __init__(
        self, endpoint: ProviderEndpointSettings, environ: Mapping[str, str] | None = None
    ) -> None:
        keys = required_keys(endpoint.id, "gemini", endpoint.api_key_env, "GEMINI_API_KEY", environ)
        self.endpoint_id = endpoint.id
        self.model = endpoint.model
        self._settings = endpoint
        self._keys = KeyPool(endpoint.id, keys, endpoint.key_cooldown_s)
        self._secrets = keys
        self._clients: dict[str, genai.Client] = {}
        self._http: aiohttp.ClientSession | None = None

    def _client(self, key: str) -> genai.Client:
        client = self._clients.get(key)
        if client is None:
            options = types.HttpOptions(
                base_url=self._settings.base_url or None, aiohttp_client=self._session()
            )
            client = genai.Client(api_key=key, http_options=options)
            self._clients[key] = client
        return client

    def _redact(self, text: str) -> str:
        return ue.redact(text, self._secrets)

    def _map(self, error: BaseException, streamed: int) -> ServiceError:
        """The one translation of SDK and transport exceptions into the error table."""
        if isinstance(error, genai_errors.APIError):
            detail = error.message or error.status or str(error)
            return ue.http_error(
                self.endpoint_id, int(error.code), self._redact(str(detail)), _headers_of(error)
            )
        if isinstance(error, aiohttp.ClientConnectorError) or (
            not streamed and isinstance(error, aiohttp.ClientError | OSError)
        ):
            return ue.upstream_error(ue.CONNECT_FAILED, self.endpoint_id, self._redact(str(error)))
        if isinstance(error, aiohttp.ClientError | OSError):
            return ue.upstream_error(ue.DISCONNECTED, self.endpoint_id, self._redact(str(error)))
        return ue.upstream_error(
            ue.MALFORMED, self.endpoint_id, f"malformed response: {self._redact(str(error))}"
        )

    def _session(self) -> aiohttp.ClientSession:
        """One pooled session for all keys, with a hook that tells ``generate`` its response."""
        if self._http is None or self._http.closed:
            trace = aiohttp.TraceConfig()
            trace.on_request_end.append(_remember_response)
            self._http = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._settings.max_connections),
                trace_configs=[trace],
            )
        return self._http

    async def _open(
        self, request: provider_pb2.GenerateRequest, deadline: FirstOutputDeadline
    ) -> tuple[AsyncIterator[types.GenerateContentResponse], Any, list[aiohttp.ClientResponse]]:
        """Starts the stream and reads its first chunk (the SDK sends the request lazily, so a
        429 only shows there), rotating pooled keys on 429/401.

        Returns the chunk iterator, the first chunk (None for an empty stream) and the HTTP
        responses the request made, to be closed if the caller stops early.
        """
        refused = Refusals()
        contents, system = gemini_contents(request, refused)
        config = types.GenerateContentConfig(**gemini_config(request, system, refused))
        refused.raise_any()

        async def attempt(
            key: str | None,
        ) -> tuple[AsyncIterator[types.GenerateContentResponse], Any, list[aiohttp.ClientResponse]]:
            assert key is not None
            responses: list[aiohttp.ClientResponse] = []
            # Set and reset around awaits only, never across a yield of ``generate``.
            token = _responses.set(responses)
            try:
                async with deadline.scope(False):
                    stream = await self._client(key).aio.models.generate_content_stream(
                        model=self.model, contents=contents, config=config
                    )
                    chunks = stream.__aiter__()
                    try:
                        first = await chunks.__anext__()
                    except StopAsyncIteration:
                        first = None
                return chunks, first, responses
            except TimeoutError:
                _close_all(responses)
                raise deadline.error(False) from None
            except (genai_errors.APIError, aiohttp.ClientError, OSError, ValueError) as raw:
                _close_all(responses)
                raise self._map(raw, 0) from None
            finally:
                _responses.reset(token)

        return await with_key_rotation(self._keys, self.endpoint_id, attempt)

    async def generate(
        self, request: provider_pb2.GenerateRequest
    ) -> AsyncGenerator[provider_pb2.GenerateResponse, None]:
        # The SDK has no read timeout of its own: the idle gap is timed here.
        deadline = FirstOutputDeadline(self._settings, timed_idle=True)
        chunks, chunk, responses = await self._open(request, deadline)
        assembler = GeminiAssembler(self.model)
        completed = False
        try:
            while chunk is not None:
                try:
                    events = assembler.chunk(chunk)
                except (AttributeError, IndexError, TypeError, ValueError) as error:
                    raise self._map(error, assembler.deltas) from None
                for event in events:
                    yield event
                output = bool(assembler.deltas)
                try:
                    async with deadline.scope(output):
                        chunk = await chunks.__anext__()
                except StopAsyncIteration:
                    chunk = None
                except TimeoutError:
                    raise deadline.error(output) from None
                except (genai_errors.APIError, aiohttp.ClientError, OSError, ValueError) as raw:
                    raise self._map(raw, assembler.deltas) from None
            completed = True
        finally:
            if not completed:
                # Mid-stream exit: drop the connection now, which is how the upstream learns to
                # stop generating (the SDK's nested generators would only release it when
                # garbage-collected).
                _close_all(responses)
        if not assembler.finished:
            raise ue.upstream_error(
                ue.DISCONNECTED,
                self.endpoint_id,
                f"stream ended before it finished (after {assembler.deltas} chunks)",
            )
        for event in assembler.final():
            yield event

    async def status(self) -> provider_pb2.EndpointStatus:
        # No network probe: polling a paid API every few seconds costs quota.
        usable = self._keys.usable()
        status = provider_pb2.EndpointStatus(
            endpoint=self.endpoint_id, provider=self.kind, model=self.model, healthy=usable > 0
        )
        if not usable:
            status.detail = f"all {len(self._keys)} API keys are cooling down after 429/401"
        return status

    async def list_models(self) -> list[str]:
        key = self._keys.acquire()
        try:
            pager = await self._client(key).aio.models.list()
            return [str(model.name) async for model in pager]
        except (genai_errors.APIError, aiohttp.ClientError, OSError) as error:
            raise self._map(error, 0) from None

    async def close(self) -> None:
        # Each SDK client also owns httpx clients (sync and async) it never uses here; close them
        # now rather than leave them to its __del__, which schedules a task on whatever loop runs.
        clients = list(self._clients.values())
        self._clients.clear()
        for client in clients:
            client.close()
            await client.aio.aclose()
        if self._http is not None:
            await self._http.close()
            self._http = None
