"""The vllm adapter over HTTP: a vLLM server's OpenAI-compatible API plus load from ``/metrics``.

Generation is the OpenAI-compatible path (pooled aiohttp, fast SSE). A cancelled stream closes
its connection, and vLLM's server aborts a request whose client disconnected, so the KV cache and
the batch slot are freed at once (the real-vLLM tests check this in vLLM's own metrics).
"""

from __future__ import annotations

from collections.abc import Mapping

import aiohttp

from hybridinference.common.settings import ProviderEndpointSettings
from hybridinference.provider.v1 import provider_pb2
from hybridinference.providers.http_chat import OpenAICompatibleAdapter
from hybridinference.providers.vllm_metrics import HitRateWindow, VllmLoad, parse_load


def metrics_url(endpoint: ProviderEndpointSettings) -> str:
    """``metrics_url`` when set, else the server root (base_url without ``/v1``) + ``/metrics``."""
    if endpoint.metrics_url:
        return endpoint.metrics_url
    root = endpoint.base_url.rstrip("/")
    root = root.removesuffix("/v1")
    return f"{root}/metrics"


class VllmHttpAdapter(OpenAICompatibleAdapter):
    kind = "vllm"

    def __init__(
        self, endpoint: ProviderEndpointSettings, environ: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(endpoint, environ)
        self._metrics_url = metrics_url(endpoint)
        self._hit_rate = HitRateWindow()

    async def load(self) -> VllmLoad:
        """Reads the server's metrics page (raises aiohttp/timeout errors when unreachable)."""
        timeout = aiohttp.ClientTimeout(total=self._settings.connect_timeout_s * 2)
        async with self.session().get(self._metrics_url, timeout=timeout) as response:
            response.raise_for_status()
            return parse_load(await response.text())

    async def status(self) -> provider_pb2.EndpointStatus:
        status = provider_pb2.EndpointStatus(
            endpoint=self.endpoint_id, provider=self.kind, model=self.model, healthy=True
        )
        try:
            load = await self.load()
        except (aiohttp.ClientError, TimeoutError) as error:
            status.healthy = False
            status.detail = f"vLLM metrics unreachable at {self._metrics_url}: " + self._redact(
                str(error) or type(error).__name__
            )
            return status
        status.waiting = load.waiting
        status.kv_cache_usage = load.kv_cache_usage
        status.prefix_cache_hit_rate = self._hit_rate.update(load)
        status.upstream_running = load.running
        return status
