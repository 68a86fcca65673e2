"""The real logger process against the real PostgreSQL, with rows the database will always refuse
(a CHECK constraint the operator added): the drainer isolates and dead-letters them with the
database's reason, stores every other row, and keeps draining afterwards."""

from __future__ import annotations

import json
from pathlib import Path

import asyncpg
import pytest

from hybridinference.common.channels import insecure_channel
from hybridinference.logger.v1 import logger_pb2, logger_pb2_grpc
from support.logger_records import make_record
from support.polling import until
from support.procs import free_port, start_service, write_config
from tests.integration.logger_pg import pg_database

__all__ = ["pg_database"]

pytestmark = pytest.mark.postgres


async def _count(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM request_log"))
    finally:
        await conn.close()


async def test_refused_rows_are_dead_lettered_and_the_rest_stored(
    pg_database: str, tmp_path: Path
) -> None:
    port = free_port()
    spool = tmp_path / "logger-spool"
    config = write_config(
        tmp_path / "mesh.yaml",
        {
            "logger": {
                "port": port,
                "database_url": pg_database,
                "spool_dir": str(spool),
                "batch_size": 100,
            }
        },
    )
    service = start_service(
        ["hybridinference.logger"], config, f"127.0.0.1:{port}", tmp_path, "logger"
    )
    try:
        conn = await asyncpg.connect(pg_database)
        try:
            await conn.execute(
                "ALTER TABLE request_log ADD CONSTRAINT no_poison CHECK (\"user\" <> 'poison')"
            )
        finally:
            await conn.close()
        records = [make_record(i, user="poison" if i % 50 == 7 else f"u{i}") for i in range(300)]
        async with insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = logger_pb2_grpc.LoggerServiceStub(channel)
            reply = await stub.WriteRecords(logger_pb2.WriteRecordsRequest(records=records))
            assert reply.accepted == 300

            async def drained() -> bool:
                stats = await stub.GetStats(logger_pb2.GetStatsRequest())
                return stats.spool_records == 0

            await until(drained, 30, "the spool drained")
            stats = await stub.GetStats(logger_pb2.GetStatsRequest())
            assert stats.rejected["store:rejected"] == 6
            assert await _count(pg_database) == 294
            letters = [
                json.loads(line)
                for line in (tmp_path / "logger-spool.dead-letters.jsonl").read_text().splitlines()
            ]
            assert sorted(letter["request_id"] for letter in letters) == [
                f"req-{i:05d}" for i in range(300) if i % 50 == 7
            ]
            assert all("no_poison" in letter["reason"] for letter in letters)
            # Still draining: the next batch is stored.
            more = [make_record(1000 + i) for i in range(10)]
            await stub.WriteRecords(logger_pb2.WriteRecordsRequest(records=more))
            await until(drained, 30, "the next batch drained")
            assert await _count(pg_database) == 304
        assert service.proc.poll() is None
    finally:
        assert service.stop() == 0, service.logs()
