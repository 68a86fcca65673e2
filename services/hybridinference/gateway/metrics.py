"""The gateway's domain metrics: one observation per request, when its record is built.

Everything per request is recorded once, at the end (time per output token included), never per
token. Labels are bounded: ``model`` is the requested model only once the router accepted that
name (or failed it for a reason other than an unknown model), capped by a LabelGuard; ``endpoint``
comes from the router's configuration.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

import grpc
from prometheus_client import Counter, Histogram
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from hybridinference.common.metrics import (
    DURATION_BUCKETS_S,
    LabelCache,
    LabelGuard,
    register_scrape_collector,
)
from hybridinference.gateway.execution import Execution
from hybridinference.gateway.shipper import RecordShipper

TTFT_BUCKETS_S = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0,
    10.0, 30.0,
)  # fmt: skip
TPOT_BUCKETS_S = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0,
)  # fmt: skip

REQUESTS = Counter(
    "hi_gateway_requests_total",
    "Chat requests finished by the gateway, by surface, model, endpoint and gRPC status code.",
    ["surface", "model", "endpoint", "code"],
)
DURATION = Histogram(
    "hi_gateway_request_duration_seconds",
    "Chat request duration at the gateway, from arrival to the last byte.",
    ["surface", "model"],
    buckets=DURATION_BUCKETS_S,
)
TTFT = Histogram(
    "hi_gateway_time_to_first_token_seconds",
    "Time from the request's arrival at the gateway to its first token.",
    ["model", "endpoint"],
    buckets=TTFT_BUCKETS_S,
)
TPOT = Histogram(
    "hi_gateway_time_per_output_token_seconds",
    "Mean time between output tokens after the first, one observation per request.",
    ["model", "endpoint"],
    buckets=TPOT_BUCKETS_S,
)
RECORD_CAPS = Counter(
    "hi_gateway_record_caps_total",
    "Request record fields the gateway cut to the record limits as it built the record (NUL "
    "removed, text cut, entries dropped), by field; the record itself is always sent.",
    ["field"],
)
TOKENS = Counter(
    "hi_gateway_tokens_total",
    "Tokens processed, by direction (prompt = in, completion = out).",
    ["model", "endpoint", "direction"],
)
COST = Counter(
    "hi_gateway_cost_usd_total",
    "Cost of served requests in US dollars, from the endpoints' price tables.",
    ["model", "endpoint"],
)
RETRIES = Counter(
    "hi_gateway_route_retries_total",
    "Extra attempts the router made for requests that were served (attempts beyond the first).",
    ["model", "endpoint"],
)
HEDGED = Counter(
    "hi_gateway_route_hedged_total",
    "Served requests whose winning attempt was a hedge (a backup started on a slow first pick).",
    ["model", "endpoint"],
)
QUOTA_STORE_ERRORS = Counter(
    "hi_gateway_quota_store_errors_total",
    "Quota counter-store calls that failed or timed out, by operation (admit, settle, void).",
    ["operation"],
)
QUOTA_GAVE_UP = Counter(
    "hi_gateway_quota_gave_up_total",
    "Settles and voids abandoned after every retry: their slot expires on its own and their "
    "reservation stays charged.",
    ["operation"],
)

# Codes that mean the model name itself may be made up: such names never become label values.
_UNTRUSTED_NAME = frozenset(
    {
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
    }
)
NO_ENDPOINT = "none"


class _Children:
    """Label caches of every per-request metric; shared by all requests of the process."""

    def __init__(self) -> None:
        self.models = LabelGuard(limit=100)
        self.requests = LabelCache(REQUESTS)
        self.duration = LabelCache(DURATION)
        self.ttft = LabelCache(TTFT)
        self.tpot = LabelCache(TPOT)
        self.tokens = LabelCache(TOKENS)
        self.cost = LabelCache(COST)
        self.retries = LabelCache(RETRIES)
        self.hedged = LabelCache(HEDGED)


_children = _Children()


def _model_label(execution: Execution) -> str:
    name = execution.call.model
    if not name:
        return NO_ENDPOINT
    if execution.selection is not None or execution.status not in _UNTRUSTED_NAME:
        return _children.models.admit(name)
    return _children.models.known(name)


def record_capped(field: str) -> None:
    RECORD_CAPS.labels(field).inc()


def observe_request(execution: Execution) -> None:
    """Records one finished request; called once, where its record is built."""
    now = time.monotonic()
    c = _children
    model = _model_label(execution)
    selection = execution.selection
    endpoint = selection.endpoint if selection is not None else NO_ENDPOINT
    c.requests.get(execution.surface, model, endpoint, execution.status.name).inc()
    c.duration.get(execution.surface, model).observe(now - execution.started_monotonic)
    first = execution.first_token_monotonic
    if first is not None:
        c.ttft.get(model, endpoint).observe(first - execution.started_monotonic)
    if selection is not None and selection.attempts > 1:
        c.retries.get(model, endpoint).inc(selection.attempts - 1)
    if selection is not None and selection.hedged:
        c.hedged.get(model, endpoint).inc()
    completion = execution.completion
    if completion is None:
        return
    usage = completion.usage
    if usage.prompt_tokens:
        c.tokens.get(model, endpoint, "prompt").inc(usage.prompt_tokens)
    if usage.completion_tokens:
        c.tokens.get(model, endpoint, "completion").inc(usage.completion_tokens)
        if first is not None and usage.completion_tokens > 1:
            c.tpot.get(model, endpoint).observe((now - first) / (usage.completion_tokens - 1))
    if completion.cost_usd:
        c.cost.get(model, endpoint).inc(completion.cost_usd)


def register_shipper_metrics(shipper: RecordShipper) -> None:
    """The request-record queue and spool of the gateway, read at scrape time."""

    def collect() -> Iterable[Metric]:
        queued = GaugeMetricFamily(
            "hi_gateway_log_queue_records", "Request records queued for the logger."
        )
        queued.add_metric([], shipper.queued)
        spooled = GaugeMetricFamily(
            "hi_gateway_log_spool_records",
            "Request records in the gateway's local spool, waiting to be replayed to the logger.",
        )
        spooled.add_metric([], shipper.spool_backlog)
        dropped = CounterMetricFamily(
            "hi_gateway_log_records_dropped",
            "Request records dropped because the queue was full or the gateway was closing.",
        )
        dropped.add_metric([], shipper.dropped)
        spilled = CounterMetricFamily(
            "hi_gateway_log_records_spilled",
            "Request records that found the queue full and went to the spool instead.",
        )
        spilled.add_metric([], shipper.spilled)
        dead = CounterMetricFamily(
            "hi_gateway_log_records_dead_lettered",
            "Request records the logger can never accept, kept in the dead-letter file instead "
            "of being retried, by reason (rejected, refused:<code>, too_large, crash).",
            labels=["reason"],
        )
        for reason, count in sorted(shipper.dead_letters.counts.items()):
            dead.add_metric([reason], count)
        spool_errors = CounterMetricFamily(
            "hi_gateway_log_spool_errors",
            "Spool appends that failed (full, disk error); the records stayed in memory.",
        )
        spool_errors.add_metric([], shipper.spool_errors)
        restarts = CounterMetricFamily(
            "hi_gateway_log_shipper_restarts",
            "Shipper background tasks restarted after an unexpected error, by task.",
            labels=["task"],
        )
        for task in ("ship", "replay"):
            restarts.add_metric([task], shipper.restarts[task])
        return [queued, spooled, dropped, spilled, dead, spool_errors, restarts]

    register_scrape_collector("gateway-shipper", collect)
