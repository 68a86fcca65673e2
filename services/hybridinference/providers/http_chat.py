"""Streaming chat completions from any OpenAI-compatible server over one pooled aiohttp session.

Used by ``openai_compatible`` (SGLang, TGI, llama.cpp server, Ollama, ...) and, with load from
``/metrics``, by ``vllm``. The hot path per network read is: SSE split, ``orjson.loads``, a dict
lookup or two, one protobuf message per content delta. aiohttp, not httpx: about a third of the
CPU per request (measured on the development machines).

Timeouts: ``connect_timeout_s`` for the TCP connect; ``first_token_timeout_s`` from sending the
request to the first content token (covers a queued request upstream); ``idle_timeout_s``
between two network reads after that (aiohttp's ``sock_read``, so no timer per chunk).

Cancellation: closing or cancelling the generator closes the connection (never returns it to the
pool mid-stream), which is how vLLM and most engines learn to abort the generation.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Mapping

import aiohttp
import orjson

from hybridinference.common.errors import ServiceError
from hybridinference.common.settings import ProviderEndpointSettings
from hybridinference.provider.v1 import provider_pb2
from hybridinference.providers import upstream_errors as ue
from hybridinference.providers.deadline import FirstOutputDeadline
from hybridinference.providers.keys import KeyPool, key_env_names, read_keys, with_key_rotation
from hybridinference.providers.openai_stream import openai_events
from hybridinference.providers.openai_wire import COMPATIBLE, Dialect, chat_body

log = logging.getLogger(__name__)

# Enough of an error body to explain it; an upstream's HTML error page is cut.
_ERROR_BODY_LIMIT = 2048


def error_body(body: bytes) -> tuple[str, str | None, str | None]:
    """The human part of an upstream error body (OpenAI's error.message when it is JSON) with
    its ``code`` and ``param`` when it has them."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body[:_ERROR_BODY_LIMIT].decode(errors="replace").strip(), None, None
    if isinstance(parsed, dict):
        error = parsed.get("error", parsed)
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            code, param = error.get("code"), error.get("param")
            return (
                str(error["message"])[:_ERROR_BODY_LIMIT],
                code if isinstance(code, str) else None,
                param if isinstance(param, str) else None,
            )
        if isinstance(error, str):
            return error[:_ERROR_BODY_LIMIT], None, None
    return body[:_ERROR_BODY_LIMIT].decode(errors="replace").strip(), None, None


def api_root(base_url: str) -> str:
    return base_url.rstrip("/")


class OpenAICompatibleAdapter:
    """ProviderAdapter for one endpoint of an OpenAI-compatible HTTP server."""

    kind = "openai_compatible"
    # What the upstream accepts beyond OpenAI's API: OpenAI-compatible engines (vLLM, SGLang,
    # ...) take vLLM's sampling and guided-decoding extensions and reasoning_content.
    dialect: Dialect = COMPATIBLE

    def __init__(
        self, endpoint: ProviderEndpointSettings, environ: Mapping[str, str] | None = None
    ) -> None:
        if not endpoint.base_url:
            from hybridinference.common.settings import ConfigError

            raise ConfigError(f"endpoint {endpoint.id!r}: base_url is required for {self.kind}")
        self.endpoint_id = endpoint.id
        self.model = endpoint.model
        self._settings = endpoint
        self._root = api_root(endpoint.base_url)
        self._chat_url = f"{self._root}/chat/completions"
        keys = read_keys(endpoint.id, key_env_names(endpoint.api_key_env), environ)
        self._keys = KeyPool(endpoint.id, keys, endpoint.key_cooldown_s) if keys else None
        self._secrets = keys
        self._session: aiohttp.ClientSession | None = None

    # -- plumbing ---------------------------------------------------------------------------

    def session(self) -> aiohttp.ClientSession:
        """The pooled keep-alive session, made on first use (it must be made inside the loop)."""
        if self._session is None or self._session.closed:
            settings = self._settings
            connector = aiohttp.TCPConnector(
                limit=settings.max_connections, keepalive_timeout=60, ttl_dns_cache=300
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(
                    total=None,
                    sock_connect=settings.connect_timeout_s,
                    sock_read=settings.idle_timeout_s,
                ),
                # The body is already JSON bytes; no per-request header guessing.
                skip_auto_headers=("User-Agent",),
            )
        return self._session

    def _headers(self, request_id: str, key: str | None) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
        if request_id:
            headers["X-Request-Id"] = request_id
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def _redact(self, text: str) -> str:
        return ue.redact(text, self._secrets)

    async def _open(
        self, body: bytes, request_id: str, deadline: FirstOutputDeadline
    ) -> aiohttp.ClientResponse:
        """Sends the request (rotating pooled keys on 429/401) and returns a 200 response."""

        async def attempt(key: str | None) -> aiohttp.ClientResponse:
            try:
                async with deadline.scope(False):
                    response = await self.session().post(
                        self._chat_url, data=body, headers=self._headers(request_id, key)
                    )
            except aiohttp.ConnectionTimeoutError as error:
                raise ue.upstream_error(
                    ue.CONNECT_TIMEOUT, self.endpoint_id, self._redact(str(error))
                ) from None
            except TimeoutError:
                raise deadline.error(False) from None
            except aiohttp.ClientConnectionError as error:
                raise ue.upstream_error(
                    ue.CONNECT_FAILED, self.endpoint_id, self._redact(str(error) or repr(error))
                ) from None
            if response.status == 200:
                return response
            raise await self._status_error(response)

        return await with_key_rotation(self._keys, self.endpoint_id, attempt)

    async def _status_error(self, response: aiohttp.ClientResponse) -> ServiceError:
        try:
            body = await response.content.read(_ERROR_BODY_LIMIT * 4)
        except (aiohttp.ClientError, TimeoutError):
            body = b""
        finally:
            response.release()
        detail, code, param = error_body(body)
        return ue.http_error(
            self.endpoint_id,
            response.status,
            self._redact(detail),
            dict(response.headers),
            code=code,
            param=param,
        )

    # -- the adapter interface --------------------------------------------------------------

    async def generate(
        self, request: provider_pb2.GenerateRequest
    ) -> AsyncGenerator[provider_pb2.GenerateResponse, None]:
        deadline = FirstOutputDeadline(self._settings)
        body = orjson.dumps(chat_body(self.model, request, self.dialect))
        response = await self._open(body, request.request_id, deadline)
        completed = False
        try:
            # aiohttp's read timeout (sock_read) is the idle gap between reads.
            async for event in openai_events(
                response.content.readany,
                self.model,
                deadline,
                self.endpoint_id,
                self._redact,
                (aiohttp.ServerTimeoutError,),
            ):
                yield event
            completed = True
        finally:
            if completed:
                response.release()
            else:
                # Mid-stream exit (error, cancellation, aclose): drop the connection so the
                # upstream sees the client go away and aborts the generation.
                response.close()

    async def status(self) -> provider_pb2.EndpointStatus:
        status = provider_pb2.EndpointStatus(
            endpoint=self.endpoint_id, provider=self.kind, model=self.model, healthy=True
        )
        try:
            await self.list_models()
        except ServiceError as error:
            status.healthy = False
            status.detail = error.message
        return status

    async def list_models(self) -> list[str]:
        key = self._keys.acquire() if self._keys else None
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        timeout = aiohttp.ClientTimeout(total=self._settings.connect_timeout_s * 2)
        try:
            async with self.session().get(
                f"{self._root}/models", headers=headers, timeout=timeout
            ) as response:
                body = await response.read()
                if response.status != 200:
                    raise ue.http_error(
                        self.endpoint_id,
                        response.status,
                        self._redact(error_body(body)[0]),
                        dict(response.headers),
                    )
        except (aiohttp.ClientError, TimeoutError) as error:
            raise ue.upstream_error(
                ue.CONNECT_FAILED, self.endpoint_id, self._redact(str(error) or repr(error))
            ) from None
        try:
            data = orjson.loads(body)["data"]
            return [str(item["id"]) for item in data]
        except (orjson.JSONDecodeError, KeyError, TypeError) as error:
            raise ue.upstream_error(
                ue.MALFORMED, self.endpoint_id, f"bad /models reply: {error}"
            ) from None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
