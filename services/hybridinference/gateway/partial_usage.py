"""What a stream that ended without its completion used: the tokens the client received.

A stream the client abandons, or one cut by a failure after its first output, never gets the
router's completion (usage and cost come with the last event). The provider still generated and
billed what was streamed, so the request is recorded and charged (quota tokens and budget) for
the output tokens it passed on, at the serving endpoint's output price. The prompt's tokens are
unknown at that point (providers report them at the end) and are not guessed.
"""

from __future__ import annotations

from collections.abc import Mapping

from hybridinference.common.settings import MeshSettings
from hybridinference.common.v1 import chat_pb2
from hybridinference.gateway.execution import Execution
from hybridinference.router.v1 import router_pb2


def output_prices(settings: MeshSettings) -> dict[str, float]:
    """USD per million output tokens of every endpoint in the mesh config, by endpoint id."""
    return {
        endpoint.id: endpoint.price_completion_per_1m
        for worker in settings.providers
        for endpoint in worker.endpoints
    }


def complete_partial(execution: Execution, prices: Mapping[str, float]) -> None:
    """Gives an execution that streamed output but got no completion one with the streamed
    tokens and their cost; leaves every other execution as it is."""
    if execution.completion is not None or execution.streamed_tokens == 0:
        return
    tokens = execution.streamed_tokens
    endpoint = execution.selection.endpoint if execution.selection is not None else ""
    execution.completion = router_pb2.Completion(
        usage=chat_pb2.Usage(completion_tokens=tokens, total_tokens=tokens),
        cost_usd=tokens * prices.get(endpoint, 0.0) / 1_000_000,
    )
