"""A provider worker's domain metrics, read at scrape time from the counters the worker already
keeps per endpoint (the same ones GetStatus reports), so generations pay nothing for them."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from hybridinference.common.metrics import register_scrape_collector
from hybridinference.providers.servicer import ProviderServicer


def register_worker_metrics(worker: str, servicer: ProviderServicer) -> None:
    def collect() -> Iterable[Metric]:
        labels = ["worker", "endpoint", "provider"]
        running = GaugeMetricFamily(
            "hi_provider_generations_running",
            "Generations this worker is streaming now.",
            labels=labels,
        )
        finished = CounterMetricFamily(
            "hi_provider_generations",
            "Generations finished by this worker, by outcome (completed, failed, cancelled).",
            labels=[*labels, "outcome"],
        )
        for endpoint, counters in list(servicer.counters.items()):
            adapter = servicer.adapters[endpoint]
            values = [worker, endpoint, adapter.kind]
            running.add_metric(values, counters.running)
            finished.add_metric([*values, "completed"], counters.completed_total)
            finished.add_metric([*values, "failed"], counters.failed_total)
            finished.add_metric([*values, "cancelled"], counters.cancelled_total)
        return [running, finished]

    register_scrape_collector(f"provider-{worker}", collect)
