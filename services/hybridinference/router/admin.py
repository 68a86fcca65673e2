"""The admin view of an endpoint (ListEndpoints): configuration, health, breaker, load, EWMAs."""

from __future__ import annotations

from hybridinference.router.breaker import CircuitState
from hybridinference.router.endpoints import Endpoint
from hybridinference.router.v1 import router_pb2

_CIRCUIT = {
    CircuitState.CLOSED: router_pb2.CIRCUIT_STATE_CLOSED,
    CircuitState.OPEN: router_pb2.CIRCUIT_STATE_OPEN,
    CircuitState.HALF_OPEN: router_pb2.CIRCUIT_STATE_HALF_OPEN,
}


def endpoint_state(e: Endpoint) -> router_pb2.EndpointState:
    stats = e.stats
    return router_pb2.EndpointState(
        id=e.id,
        provider=e.provider,
        worker_address=e.worker_address,
        model=e.model,
        healthy=e.healthy,
        health_detail=e.health_detail,
        in_flight=e.in_flight,
        requests_total=e.requests_total,
        failures_total=e.failures_total,
        circuit_state=_CIRCUIT[e.breaker.state],
        circuit_retry_in_s=e.breaker.retry_in_s(),
        consecutive_failures=e.breaker.consecutive_failures,
        ttft_ewma_ms=stats.ttft_ewma.value or 0.0,
        tpot_ewma_ms=stats.tpot_ewma.value or 0.0,
        ttft_p90_ms=stats.ttft_p(0.9) or 0.0,
        ttft_p95_ms=stats.ttft_p95 or 0.0,
        waiting=stats.waiting,
        running=stats.running,
        kv_cache_usage=stats.kv_cache_usage,
        locality=e.locality,
        hedges_total=e.hedges_total,
        price_prompt_per_1m=e.price_prompt_per_1m,
        price_completion_per_1m=e.price_completion_per_1m,
    )
