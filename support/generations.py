"""Running one generation through a provider adapter in tests: every event, and the choices they
make (merged as the worker's GenerateUnary merges them)."""

from __future__ import annotations

from hybridinference.common.chat_events import ChoiceAccumulator
from hybridinference.provider.v1 import provider_pb2
from hybridinference.providers.adapter import ProviderAdapter


async def run_generation(
    adapter: ProviderAdapter, request: provider_pb2.GenerateRequest
) -> tuple[list[provider_pb2.GenerateResponse], ChoiceAccumulator]:
    """The events of one generation and their merge; the adapter is closed afterwards."""
    merged = ChoiceAccumulator()
    events = []
    try:
        async for event in adapter.generate(request):
            events.append(event)
            merged.add(event)
    finally:
        await adapter.close()
    return events, merged
