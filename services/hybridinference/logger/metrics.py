"""The logger's domain metrics: intake and refusals, the write-ahead spool, database writes.

Counts the logger already keeps (LoggerStats, the spool's backlog) are read at scrape time;
database writes are timed per batch, never per record.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import Gauge, Histogram
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from hybridinference.common.metrics import register_scrape_collector
from hybridinference.common.spool import Spool
from hybridinference.logger.stats import LoggerStats

WRITE_SECONDS = Histogram(
    "hi_logger_db_write_seconds",
    "Time to write one batch of request records to the database.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
DB_CONNECTED = Gauge(
    "hi_logger_db_connected",
    "1 while the last write to the request-log database succeeded, 0 while it fails.",
)


def note_batch_written(seconds: float) -> None:
    WRITE_SECONDS.observe(seconds)
    DB_CONNECTED.set(1)


def note_store_down() -> None:
    DB_CONNECTED.set(0)


def register_logger_metrics(stats: LoggerStats, spool: Spool) -> None:
    # The store opened (and migrated) before this is called, so it starts out connected.
    DB_CONNECTED.set(1)

    def collect() -> Iterable[Metric]:
        accepted = CounterMetricFamily(
            "hi_logger_records_accepted", "Request records accepted into the spool."
        )
        accepted.add_metric([], stats.accepted)
        rejected = CounterMetricFamily(
            "hi_logger_records_rejected",
            "Request records refused as invalid, by field and kind.",
            labels=["reason"],
        )
        for reason, count in list(stats.rejected.items()):
            rejected.add_metric([reason], count)
        written = CounterMetricFamily(
            "hi_logger_rows_written", "Rows inserted into the request-log database."
        )
        written.add_metric([], stats.stored)
        duplicates = CounterMetricFamily(
            "hi_logger_rows_duplicate", "Records already in the database (replays), not re-added."
        )
        duplicates.add_metric([], stats.duplicates)
        failures = CounterMetricFamily(
            "hi_logger_db_write_failures", "Batch writes that failed because the database was away."
        )
        failures.add_metric([], stats.store_failures)
        spool_full = CounterMetricFamily(
            "hi_logger_spool_full_refusals", "Batches refused because the spool was full."
        )
        spool_full.add_metric([], stats.spool_full)
        drainer_errors = CounterMetricFamily(
            "hi_logger_drainer_errors",
            "Unexpected errors the spool drainer survived (the batch is retried; the drainer "
            "restarts if it died).",
        )
        drainer_errors.add_metric([], stats.drainer_errors)
        spool_records = GaugeMetricFamily(
            "hi_logger_spool_records", "Records in the spool not yet written to the database."
        )
        spool_records.add_metric([], spool.pending_records)
        spool_bytes = GaugeMetricFamily(
            "hi_logger_spool_bytes", "Bytes in the spool not yet written to the database."
        )
        spool_bytes.add_metric([], spool.pending_bytes)
        return [
            accepted,
            rejected,
            written,
            duplicates,
            failures,
            spool_full,
            drainer_errors,
            spool_records,
            spool_bytes,
        ]

    register_scrape_collector("logger-stats", collect)
