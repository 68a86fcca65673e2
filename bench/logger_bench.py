"""Request-log benchmark against the local PostgreSQL: ``.venv/bin/python bench/logger_bench.py``.

1. store:    PostgresStore.write_batch (convert, binary COPY into request_log, usage rollup; a
             replay goes through a staging table and a merge), sustained rows/s in one writer.
2. pipeline: a real logger process; gRPC WriteRecords batches from several clients; rows/s until
             every row is committed in PostgreSQL (includes validation, the fsync'd spool and the
             drainer), and the acknowledgement latency of one batch.
3. request path: what logging costs a request in the gateway, i.e. build + RecordShipper.submit
             per call, with the shipper delivering to the live logger in the background.

Besides rows/s, each phase reports the CPU time spent per row by the Python side (the bench
process for 1., the logger process for 2.) and by the PostgreSQL backends serving the benchmark's
database (from /proc): on a shared machine these are far steadier than rows/s, and they say which
side bounds the throughput (two cores: the sum of the two is what the machine has to spend).

Completion of 2. is polled from usage_hourly (maintained in the same transaction as the rows, so
its request count equals the committed rows; a count(*) of a few hundred thousand rows every 50 ms
would take a sizeable share of the database's core), then checked once with count(*).

Creates and drops its own database; prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hybridinference.common.channels import insecure_channel
from hybridinference.gateway.shipper import RecordShipper
from hybridinference.logger.store import PostgresStore
from hybridinference.logger.v1 import logger_pb2, logger_pb2_grpc
from support.logger_records import make_record
from support.polling import until
from support.procs import free_port, start_service, write_config

ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


class PostgresCpu:
    """CPU seconds of the server backends connected to one database, between start and stop
    (a backend that connects in between counts from zero)."""

    def __init__(self, database: str) -> None:
        self._database = database
        self._start: dict[int, float] = {}

    async def _pids(self) -> list[int]:
        conn = await asyncpg.connect(ADMIN)
        try:
            rows = await conn.fetch(
                "SELECT pid FROM pg_stat_activity WHERE datname = $1", self._database
            )
        finally:
            await conn.close()
        return [int(row["pid"]) for row in rows]

    async def start(self) -> None:
        self._start = {pid: cpu_s(pid) for pid in await self._pids()}

    async def stop(self) -> float:
        return sum(cpu_s(pid) - self._start.get(pid, 0.0) for pid in await self._pids())


def per_row_us(seconds: float, rows: int) -> float:
    return round(seconds / rows * 1e6, 1)


def records(start: int, count: int, tag: str) -> list[logger_pb2.RequestRecord]:
    out = []
    for i in range(start, start + count):
        record = make_record(i % 50_000)
        record.request_id = f"{tag}-{i:08d}"
        out.append(record)
    return out


async def bench_store(dsn: str, database: str, total: int, batch: int) -> dict[str, float]:
    store = await PostgresStore.open(dsn)
    server = PostgresCpu(database)
    try:
        prepared = [records(i, batch, "store") for i in range(0, total, batch)]
        await server.start()
        cpu = time.process_time()
        started = time.perf_counter()
        for chunk in prepared:
            await store.write_batch(chunk)
        elapsed = time.perf_counter() - started
        python_cpu = time.process_time() - cpu
        server_cpu = await server.stop()
        replay_started = time.perf_counter()
        for chunk in prepared[:5]:
            await store.write_batch(chunk)  # replays: idempotent, nothing inserted
        replay_rows_s = 5 * batch / (time.perf_counter() - replay_started)
    finally:
        await store.close()
    return {
        "rows": total,
        "batch": batch,
        "rows_per_s": round(total / elapsed),
        "replay_rows_per_s": round(replay_rows_s),
        "python_cpu_us_per_row": per_row_us(python_cpu, total),
        "postgres_cpu_us_per_row": per_row_us(server_cpu, total),
    }


async def count_rows(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM request_log"))
    finally:
        await conn.close()


async def counted_rows(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval("SELECT coalesce(sum(requests), 0) FROM usage_hourly"))
    finally:
        await conn.close()


async def _at_least(dsn: str, rows: int) -> bool:
    return await counted_rows(dsn) >= rows


async def bench_pipeline(
    dsn: str, database: str, logger_pid: int, address: str, total: int, batch: int, clients: int
) -> dict[str, float]:
    before = await count_rows(dsn)
    prepared = [
        logger_pb2.WriteRecordsRequest(records=records(i, batch, "pipe"))
        for i in range(0, total, batch)
    ]
    channel = insecure_channel(address)
    stub = logger_pb2_grpc.LoggerServiceStub(channel)
    ack_ms: list[float] = []
    queue = iter(prepared)

    async def client() -> None:
        for request in queue:
            started = time.perf_counter()
            await stub.WriteRecords(request, timeout=60)
            ack_ms.append((time.perf_counter() - started) * 1000)

    server = PostgresCpu(database)
    await server.start()
    logger_cpu = cpu_s(logger_pid)
    client_cpu = time.process_time()
    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    acked = time.perf_counter() - started
    await until(lambda: _at_least(dsn, before + total), 600, "every row committed", every_s=0.05)
    stored = time.perf_counter() - started
    logger_cpu = cpu_s(logger_pid) - logger_cpu
    client_cpu = time.process_time() - client_cpu
    server_cpu = await server.stop()
    await channel.close()
    assert await count_rows(dsn) == before + total
    return {
        "rows": total,
        "batch": batch,
        "clients": clients,
        "acked_rows_per_s": round(total / acked),
        "stored_rows_per_s": round(total / stored),
        "ack_ms_p50": round(statistics.median(ack_ms), 2),
        "ack_ms_p99": round(sorted(ack_ms)[int(len(ack_ms) * 0.99) - 1], 2),
        "logger_cpu_us_per_row": per_row_us(logger_cpu, total),
        "postgres_cpu_us_per_row": per_row_us(server_cpu, total),
        "client_cpu_us_per_row": per_row_us(client_cpu, total),
    }


async def bench_submit(address: str, total: int, spool: Path) -> dict[str, float]:
    shipper = RecordShipper(
        address, queue_size=100_000, batch_size=256, flush_interval_s=0.05, spool_dir=str(spool)
    )
    await shipper.start()
    prepared = records(0, total, "submit")
    costs: list[float] = []
    for i, record in enumerate(prepared):
        started = time.perf_counter_ns()
        shipper.submit(record)
        costs.append((time.perf_counter_ns() - started) / 1000)
        if i % 64 == 0:
            await asyncio.sleep(0)  # like a server between requests: the shipper gets to run
    await shipper.close(timeout_s=30)
    costs.sort()
    return {
        "records": total,
        "submit_us_p50": round(costs[len(costs) // 2], 2),
        "submit_us_p99": round(costs[int(len(costs) * 0.99)], 2),
        "sent": shipper.sent,
        "dropped": shipper.dropped,
    }


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=2000)
    args = parser.parse_args()
    name = f"hi_logger_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(ADMIN)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    dsn = f"postgresql://postgres@127.0.0.1:5432/{name}"
    results: dict[str, object] = {}
    service = None
    try:
        results["store"] = await bench_store(dsn, name, args.rows, args.batch)
        with tempfile.TemporaryDirectory() as tmp:
            port = free_port()
            config = write_config(
                Path(tmp) / "mesh.yaml",
                {
                    "log_level": "WARNING",
                    "logger": {
                        "port": port,
                        "database_url": dsn,
                        "spool_dir": f"{tmp}/spool",
                        "batch_size": args.batch,
                    },
                },
            )
            address = f"127.0.0.1:{port}"
            service = start_service(
                ["hybridinference.logger"], config, address, Path(tmp), "logger"
            )
            results["pipeline"] = await bench_pipeline(
                dsn, name, service.proc.pid, address, args.rows // 2, 500, 4
            )
            results["request_path"] = await bench_submit(address, 50_000, Path(tmp) / "gw")
            service.stop()
            service = None
    finally:
        if service is not None:
            service.stop()
        admin = await asyncpg.connect(ADMIN)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
