"""The models the router serves, with their capabilities, cached briefly in the gateway.

The admission checks read it on every request, so it is a dict lookup almost always; it is
refreshed from the router's ListModels when older than ``ttl_s`` (a config reload shows up
within that), and at once, at most every ``miss_refresh_s``, for a model it does not know.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from hybridinference.common.chat_features import capabilities_settings
from hybridinference.common.errors import ServiceError
from hybridinference.common.settings import CapabilitySettings
from hybridinference.gateway.router_client import RouterClient
from hybridinference.router.v1 import router_pb2

log = logging.getLogger(__name__)


class ModelCatalog:
    def __init__(
        self,
        router: RouterClient,
        ttl_s: float = 5.0,
        miss_refresh_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._router = router
        self._ttl_s = ttl_s
        self._miss_refresh_s = miss_refresh_s
        self._clock = clock
        self._routes: dict[str, router_pb2.ModelRoute] = {}
        # Parsed once per refresh: the admission checks read them on every request.
        self._capabilities: dict[str, CapabilitySettings] = {}
        self._fetched_at: float | None = None
        self._lock = asyncio.Lock()

    async def routes(self) -> list[router_pb2.ModelRoute]:
        """Every model, fresh from the router (ListModels callers want the current table)."""
        await self._refresh()
        return list(self._routes.values())

    async def capabilities(self, model: str) -> CapabilitySettings | None:
        """The model's capabilities, or None when the router does not know it (it answers 404)."""
        if await self.get(model) is None:
            return None
        return self._capabilities.get(model)

    async def get(self, model: str) -> router_pb2.ModelRoute | None:
        """The model's route, or None when the router does not know it (it answers 404)."""
        now = self._clock()
        fetched = self._fetched_at
        stale = fetched is None or now - fetched > self._ttl_s
        route = self._routes.get(model)
        if stale or (route is None and now - (fetched or 0.0) > self._miss_refresh_s):
            await self._refresh()
            route = self._routes.get(model)
        return route

    async def _refresh(self) -> None:
        async with self._lock:
            try:
                routes = await self._router.list_models()
            except ServiceError:
                if self._fetched_at is None:
                    raise
                # The router is briefly unreachable: the last table is better than failing
                # requests the router may serve again in a moment (routing reports its own
                # errors); try again after another ttl.
                log.warning("model list refresh failed; keeping the previous one")
                self._fetched_at = self._clock()
                return
            self._routes = {route.name: route for route in routes}
            self._capabilities = {
                route.name: capabilities_settings(route.capabilities) for route in routes
            }
            self._fetched_at = self._clock()
