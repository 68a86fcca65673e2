"""Driving a provider adapter in a test: every event of one generation, or the error it ends with.

Each helper closes the adapter afterwards (its HTTP session and SDK clients), as a worker does
when it stops.
"""

from __future__ import annotations

from typing import Any

import pytest

from hybridinference.common.errors import ServiceError
from hybridinference.provider.v1 import provider_pb2
from hybridinference.providers.adapter import ProviderAdapter


async def collect(adapter: ProviderAdapter, req: provider_pb2.GenerateRequest) -> list[Any]:
    try:
        return [event async for event in adapter.generate(req)]
    finally:
        await adapter.close()


async def failure(adapter: ProviderAdapter, req: provider_pb2.GenerateRequest) -> ServiceError:
    with pytest.raises(ServiceError) as caught:
        await collect(adapter, req)
    return caught.value
