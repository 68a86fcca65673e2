"""The gateway's cached model list: fresh within its ttl, refreshed on a miss at most once a
second, and kept when the router is briefly unreachable."""

from __future__ import annotations

import grpc
import pytest

from hybridinference.common.chat_features import capabilities_proto
from hybridinference.common.errors import ServiceError
from hybridinference.common.settings import CapabilitySettings
from hybridinference.gateway.model_catalog import ModelCatalog
from hybridinference.router.v1 import router_pb2


class FakeRouter:
    def __init__(self) -> None:
        self.calls = 0
        self.routes = [
            router_pb2.ModelRoute(
                name="m", capabilities=capabilities_proto(CapabilitySettings(tools=True), 0)
            )
        ]
        self.down = False

    async def list_models(self) -> list[router_pb2.ModelRoute]:
        self.calls += 1
        if self.down:
            raise ServiceError(grpc.StatusCode.UNAVAILABLE, "router down")
        return list(self.routes)


async def test_ttl_miss_refresh_and_stale_on_failure() -> None:
    now = [0.0]
    router = FakeRouter()
    catalog = ModelCatalog(router, ttl_s=5.0, miss_refresh_s=1.0, clock=lambda: now[0])

    caps = await catalog.capabilities("m")
    assert caps is not None and caps.tools and router.calls == 1
    assert await catalog.capabilities("m") is not None and router.calls == 1
    # An unknown model refreshes, but not more than once a second.
    now[0] = 0.5
    assert await catalog.capabilities("new") is None and router.calls == 1
    now[0] = 1.6
    router.routes.append(router_pb2.ModelRoute(name="new"))
    caps = await catalog.capabilities("new")
    assert caps is not None and not caps.tools and router.calls == 2
    # Past the ttl with the router down: the previous table still answers.
    now[0] = 10.0
    router.down = True
    assert await catalog.capabilities("m") is not None and router.calls == 3


async def test_first_fetch_failure_is_the_routers_error() -> None:
    router = FakeRouter()
    router.down = True
    with pytest.raises(ServiceError):
        await ModelCatalog(router).capabilities("m")
