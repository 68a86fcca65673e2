"""The gemini adapter: Google's Gemini API through the official ``google-genai`` SDK, streaming.

Roles: ``system`` and ``developer`` messages become the system instruction (Gemini has no such
role in ``contents``); ``assistant`` is ``model``; everything else is ``user``. Usage metadata
becomes usage: prompt = ``prompt_token_count``; completion = ``candidates_token_count`` plus
``thoughts_token_count`` (thinking tokens are billed as output); cached =
``cached_content_token_count``.

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
from hybridinference.common.v1 import chat_pb2
from hybridinference.provider.v1 import provider_pb2
from hybridinference.providers import upstream_errors as ue
from hybridinference.providers.deadline import FirstOutputDeadline
from hybridinference.providers.keys import KeyPool, required_keys, with_key_rotation
from hybridinference.providers.sampling import sampling_options

log = logging.getLogger(__name__)

_SYSTEM_ROLES = frozenset({"system", "developer"})
# Gemini's names for the sampling fields that differ from OpenAI's.
_GEMINI_NAMES = {"max_tokens": "max_output_tokens", "stop": "stop_sequences"}
_CONTENT_FILTER = frozenset(
    {"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY"}
)


def gemini_contents(
    request: provider_pb2.GenerateRequest,
) -> tuple[list[dict[str, Any]], str | None]:
    """``contents`` and the system instruction (None when there is none) for a conversation."""
    system: list[str] = []
    contents: list[dict[str, Any]] = []
    for message in request.messages:
        if message.role in _SYSTEM_ROLES:
            system.append(message.content)
            continue
        role = "model" if message.role == "assistant" else "user"
        contents.append({"role": role, "parts": [{"text": message.content}]})
    return contents, ("\n\n".join(system) if system else None)


def gemini_config(
    request: provider_pb2.GenerateRequest, system: str | None
) -> types.GenerateContentConfig:
    sampling = request.sampling
    options = sampling_options(sampling, _GEMINI_NAMES)
    if system is not None:
        options["system_instruction"] = system
    return types.GenerateContentConfig(**options)


def finish_reason(reason: Any) -> chat_pb2.FinishReason.ValueType:
    name = str(getattr(reason, "value", reason) or "")
    if name == "MAX_TOKENS":
        return chat_pb2.FINISH_REASON_LENGTH
    if name in _CONTENT_FILTER:
        return chat_pb2.FINISH_REASON_CONTENT_FILTER
    return chat_pb2.FINISH_REASON_STOP


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
        contents, system = gemini_contents(request)
        config = gemini_config(request, system)

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
        streamed = 0
        prompt = completion = cached = 0
        have_usage = False
        finish: chat_pb2.FinishReason.ValueType = chat_pb2.FINISH_REASON_UNSPECIFIED
        completed = False
        try:
            while chunk is not None:
                try:
                    text, reason, usage = self._read(chunk)
                except (AttributeError, IndexError, TypeError, ValueError) as error:
                    raise self._map(error, streamed) from None
                if reason is not None:
                    finish = reason
                if usage is not None:
                    prompt, completion, cached = usage
                    have_usage = True
                if text:
                    event = provider_pb2.GenerateResponse(delta=text)
                    if not streamed:
                        event.model = self.model
                    streamed += 1
                    yield event
                try:
                    async with deadline.scope(bool(streamed)):
                        chunk = await chunks.__anext__()
                except StopAsyncIteration:
                    chunk = None
                except TimeoutError:
                    raise deadline.error(bool(streamed)) from None
                except (genai_errors.APIError, aiohttp.ClientError, OSError, ValueError) as raw:
                    raise self._map(raw, streamed) from None
            completed = True
        finally:
            if not completed:
                # Mid-stream exit: drop the connection now, which is how the upstream learns to
                # stop generating (the SDK's nested generators would only release it when
                # garbage-collected).
                _close_all(responses)
        if finish == chat_pb2.FINISH_REASON_UNSPECIFIED:
            raise ue.upstream_error(
                ue.DISCONNECTED,
                self.endpoint_id,
                f"stream ended before it finished (after {streamed} chunks)",
            )
        if not have_usage:
            completion = streamed
        final = provider_pb2.GenerateResponse(
            usage=chat_pb2.Usage(
                prompt_tokens=prompt,
                completion_tokens=completion,
                total_tokens=prompt + completion,
                cached_tokens=cached,
            ),
            finish_reason=finish,
        )
        if not streamed:
            final.model = self.model
        yield final

    @staticmethod
    def _read(
        chunk: types.GenerateContentResponse,
    ) -> tuple[str, chat_pb2.FinishReason.ValueType | None, tuple[int, int, int] | None]:
        text = ""
        reason = None
        candidates = chunk.candidates
        if candidates:
            candidate = candidates[0]
            content = candidate.content
            if content is not None and content.parts:
                # Thought summaries are not part of the answer.
                text = "".join(p.text for p in content.parts if p.text and not p.thought)
            if candidate.finish_reason is not None:
                reason = finish_reason(candidate.finish_reason)
        elif chunk.prompt_feedback is not None and chunk.prompt_feedback.block_reason:
            reason = chat_pb2.FINISH_REASON_CONTENT_FILTER
        usage = None
        meta = chunk.usage_metadata
        if meta is not None and meta.prompt_token_count is not None:
            usage = (
                int(meta.prompt_token_count),
                int(meta.candidates_token_count or 0) + int(meta.thoughts_token_count or 0),
                int(meta.cached_content_token_count or 0),
            )
        return text, reason, usage

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
        self._clients.clear()
        if self._http is not None:
            await self._http.close()
            self._http = None
