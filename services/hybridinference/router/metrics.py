"""The router's domain metrics.

Endpoint state the router already keeps (health, breaker, in-flight, counters, probe load,
latency EWMAs) is read from the live endpoint table at scrape time, so the request path pays
nothing for it. Only routing decisions (retries, fallbacks, which endpoint served) are counted
as they happen, with cached label children. Every label value comes from the configuration.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import Counter
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from hybridinference.common.metrics import LabelCache, register_scrape_collector
from hybridinference.router.breaker import CircuitState
from hybridinference.router.endpoints import Endpoint, EndpointTable, Model

ROUTED = Counter(
    "hi_router_routed_total",
    "Requests whose first token came from this endpoint, by requested model.",
    ["model", "endpoint"],
)
RETRIES = Counter(
    "hi_router_retries_total",
    "Attempts after the first (after a failure before the first token), by requested model.",
    ["model"],
)
FALLBACKS = Counter(
    "hi_router_fallbacks_total",
    "Requests served by an endpoint of a fallback model, by requested model.",
    ["model"],
)

ADMISSION = Counter(
    "hi_router_admission_total",
    "Requests no endpoint could serve within the SLO when they arrived (hybrid): queued at the "
    "router, and rejected (429) after the queue bound or wait.",
    ["model", "outcome"],
)

_routed = LabelCache(ROUTED)
_admission = LabelCache(ADMISSION)
_retries = LabelCache(RETRIES)
_fallbacks = LabelCache(FALLBACKS)


def note_retry(model: Model) -> None:
    _retries.get(model.name).inc()


def note_routed(model: Model, endpoint_id: str) -> None:
    """The request's stream started on ``endpoint_id``."""
    _routed.get(model.name, endpoint_id).inc()
    if all(endpoint.id != endpoint_id for endpoint in model.endpoints):
        _fallbacks.get(model.name).inc()


def note_admission(model: Model, outcome: str) -> None:
    """``outcome``: "queued" or "rejected"."""
    _admission.get(model.name, outcome).inc()


_STATES = tuple(state.value for state in CircuitState)


def _endpoint_families(endpoints: list[Endpoint]) -> Iterable[Metric]:
    labels = ["endpoint", "provider", "worker"]
    healthy = GaugeMetricFamily(
        "hi_router_endpoint_healthy", "1 when the endpoint passes health probes.", labels=labels
    )
    in_flight = GaugeMetricFamily(
        "hi_router_endpoint_in_flight",
        "Requests the router has open on the endpoint.",
        labels=labels,
    )
    requests = CounterMetricFamily(
        "hi_router_endpoint_attempts", "Attempts sent to the endpoint.", labels=labels
    )
    failures = CounterMetricFamily(
        "hi_router_endpoint_failures", "Attempts that ended with an error status.", labels=labels
    )
    hedges = CounterMetricFamily(
        "hi_router_endpoint_hedges", "Backup attempts (hedges) sent to the endpoint.", labels=labels
    )
    wasted = CounterMetricFamily(
        "hi_router_endpoint_hedge_wasted_usd",
        "Cost of the endpoint's hedge attempts that lost (their billed prompts), in USD.",
        labels=labels,
    )
    state = GaugeMetricFamily(
        "hi_router_breaker_state",
        "Circuit breaker state: 1 for the current state, 0 for the others.",
        labels=[*labels, "state"],
    )
    opened = CounterMetricFamily(
        "hi_router_breaker_opened",
        "Times the endpoint's circuit breaker opened (closed/half-open -> open).",
        labels=labels,
    )
    waiting = GaugeMetricFamily(
        "hi_router_endpoint_queue_waiting",
        "Generations queued at the endpoint, as its last probe reported.",
        labels=labels,
    )
    running = GaugeMetricFamily(
        "hi_router_endpoint_running",
        "Generations running at the endpoint, as its last probe reported.",
        labels=labels,
    )
    kv_cache = GaugeMetricFamily(
        "hi_router_endpoint_kv_cache_usage_ratio",
        "KV-cache use of the endpoint (0..1), as its last probe reported.",
        labels=labels,
    )
    ttft = GaugeMetricFamily(
        "hi_router_endpoint_ttft_ewma_seconds",
        "Moving average of the endpoint's time to first token, as the router measured it.",
        labels=labels,
    )
    for endpoint in endpoints:
        values = [endpoint.id, endpoint.provider, endpoint.worker.name]
        healthy.add_metric(values, 1.0 if endpoint.healthy else 0.0)
        in_flight.add_metric(values, endpoint.in_flight)
        requests.add_metric(values, endpoint.requests_total)
        failures.add_metric(values, endpoint.failures_total)
        hedges.add_metric(values, endpoint.hedges_total)
        wasted.add_metric(values, endpoint.wasted_usd)
        current = endpoint.breaker.state.value
        for name in _STATES:
            state.add_metric([*values, name], 1.0 if name == current else 0.0)
        opened.add_metric(values, endpoint.breaker.opened_total)
        stats = endpoint.stats
        waiting.add_metric(values, stats.waiting)
        running.add_metric(values, stats.running)
        kv_cache.add_metric(values, stats.kv_cache_usage)
        if stats.ttft_ewma.value is not None:
            ttft.add_metric(values, stats.ttft_ewma.value / 1000)
    return [
        healthy,
        in_flight,
        requests,
        failures,
        hedges,
        wasted,
        state,
        opened,
        waiting,
        running,
        kv_cache,
        ttft,
    ]


def register_table_metrics(current_table: Callable[[], EndpointTable]) -> None:
    """Endpoint metrics from whichever table is live at scrape time (it changes on reload)."""
    register_scrape_collector(
        "router-endpoints", lambda: _endpoint_families(list(current_table().endpoints.values()))
    )
