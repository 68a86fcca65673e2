"""The real logger process (SQLite and PostgreSQL) fed by RecordShipper, read back over gRPC."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import orjson
import pytest

from hybridinference.cli.__main__ import main as cli_main
from hybridinference.common.channels import insecure_channel
from hybridinference.common.errors import from_rpc_error
from hybridinference.common.record_batch import encode_batch
from hybridinference.gateway.shipper import RecordShipper
from hybridinference.logger.v1 import logger_pb2, logger_pb2_grpc
from support.logger_records import make_record
from support.polling import until
from support.procs import ServiceProcess, free_port, start_service, write_config
from tests.integration.logger_pg import pg_database

__all__ = ["pg_database"]

N = 600


def _start_logger(tmp_path: Path, logger: dict[str, object]) -> ServiceProcess:
    port = free_port()
    config = write_config(tmp_path / "mesh.yaml", {"logger": {"port": port, **logger}})
    return start_service(
        ["hybridinference.logger"], config, f"127.0.0.1:{port}", tmp_path, "logger"
    )


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def logger_process(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ServiceProcess]:
    if request.param == "sqlite":
        settings: dict[str, object] = {"sqlite_path": str(tmp_path / "var" / "requests.db")}
    else:
        settings = {"database_url": request.getfixturevalue("pg_database")}
    service = _start_logger(tmp_path, settings)
    yield service
    assert service.stop() == 0, service.logs()


@pytest.fixture
async def stub(
    logger_process: ServiceProcess,
) -> AsyncIterator[logger_pb2_grpc.LoggerServiceStub]:
    channel = insecure_channel(logger_process.address)
    yield logger_pb2_grpc.LoggerServiceStub(channel)
    await channel.close()


async def _drained(stub: logger_pb2_grpc.LoggerServiceStub) -> logger_pb2.GetStatsResponse:
    """Waits until every acknowledged record is in the database (the spool is empty)."""

    async def empty() -> bool:
        stats = await stub.GetStats(logger_pb2.GetStatsRequest())
        return stats.spool_records == 0

    await until(empty, 20, "the logger's spool to drain")
    return await stub.GetStats(logger_pb2.GetStatsRequest())


async def _list_all(
    stub: logger_pb2_grpc.LoggerServiceStub, **filters: str
) -> list[logger_pb2.RequestRecord]:
    records: list[logger_pb2.RequestRecord] = []
    token = ""
    while True:
        page = await stub.ListRecords(
            logger_pb2.ListRecordsRequest(page_size=97, page_token=token, **filters)
        )
        records.extend(page.records)
        token = page.next_page_token
        if not token:
            return records


async def test_shipped_records_are_stored_exactly_once(
    logger_process: ServiceProcess, stub: logger_pb2_grpc.LoggerServiceStub
) -> None:
    shipper = RecordShipper(
        logger_process.address, queue_size=N, batch_size=50, flush_interval_s=0.01
    )
    await shipper.start()
    originals = {f"req-{i:05d}": make_record(i) for i in range(N)}

    async def producer(offset: int) -> None:
        for i in range(offset, N, 12):
            shipper.submit(originals[f"req-{i:05d}"])
            if i % 5 == 0:
                await asyncio.sleep(0)

    await asyncio.gather(*(producer(k) for k in range(12)))
    # Replays of already shipped records must not create rows.
    for i in range(0, N, 100):
        shipper.submit(originals[f"req-{i:05d}"])
    await shipper.close(timeout_s=20)
    assert (shipper.dropped, shipper.failed_batches, shipper.rejected) == (0, 0, 0)
    assert shipper.sent == N + N // 100
    stats = await _drained(stub)
    assert (stats.accepted, stats.stored, stats.duplicates) == (N + N // 100, N, N // 100)

    listed = await _list_all(stub)
    assert len(listed) == N
    assert {r.request_id for r in listed} == set(originals)
    assert listed == sorted(listed, key=lambda r: r.started_at.seconds, reverse=True)
    for record in listed:
        assert record == originals[record.request_id]
    for request_id in ("req-00000", "req-00321", f"req-{N - 1:05d}"):
        got = await stub.GetRecord(logger_pb2.GetRecordRequest(request_id=request_id))
        assert got.record == originals[request_id]

    by_model = await _list_all(stub, model="gpt-x", status="OK")
    want = {k for k, r in originals.items() if r.requested_model == "gpt-x" and r.status == "OK"}
    assert {r.request_id for r in by_model} == want


async def test_errors(stub: logger_pb2_grpc.LoggerServiceStub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await stub.GetRecord(logger_pb2.GetRecordRequest(request_id="no-such-request"))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    assert "no-such-request" in (missing.value.details() or "")

    for size in (-1, 1001):
        with pytest.raises(grpc.aio.AioRpcError) as bad:
            await stub.ListRecords(logger_pb2.ListRecordsRequest(page_size=size))
        error = from_rpc_error(bad.value)
        assert error.code == grpc.StatusCode.INVALID_ARGUMENT
        assert [v.field for v in error.violations] == ["page_size"]

    with pytest.raises(grpc.aio.AioRpcError) as token:
        await stub.ListRecords(logger_pb2.ListRecordsRequest(page_token="garbage"))
    assert [v.field for v in from_rpc_error(token.value).violations] == ["page_token"]

    reply = await stub.WriteRecords(
        logger_pb2.WriteRecordsRequest(
            records=[
                make_record(1),
                logger_pb2.RequestRecord(),
                make_record(2, request_id="x" * 129),
            ]
        )
    )
    assert reply.accepted == 1
    assert [(r.index, r.reason) for r in reply.rejected] == [
        (1, "request_id is required"),
        (2, "request_id is longer than 128 characters"),
    ]
    stats = await _drained(stub)
    assert dict(stats.rejected) == {"request_id:missing": 1, "request_id:too_long": 1}
    default_page = await stub.ListRecords(logger_pb2.ListRecordsRequest())
    assert [r.request_id for r in default_page.records] == ["req-00001"]


async def test_bad_records_are_rejected_with_counted_reasons(
    logger_process: ServiceProcess, stub: logger_pb2_grpc.LoggerServiceStub
) -> None:
    good = make_record(1).SerializeToString()
    # A record whose user field holds bytes that are not UTF-8, as a non-Python client could send.
    bad_utf8 = make_record(2, user="").SerializeToString() + b"\x2a\x02\xff\xfe"
    oversized = make_record(3)
    oversized.metadata.update({f"k{i}": "v" * 2000 for i in range(40)})
    batch = encode_batch(
        [
            good,
            bad_utf8,
            oversized.SerializeToString(),
            logger_pb2.RequestRecord().SerializeToString(),
            make_record(4, provider="p\x00").SerializeToString(),
        ]
    )
    channel = insecure_channel(logger_process.address)
    try:
        write = channel.unary_unary(
            "/hybridinference.logger.v1.LoggerService/WriteRecords",
            request_serializer=None,
            response_deserializer=logger_pb2.WriteRecordsResponse.FromString,
        )
        reply: logger_pb2.WriteRecordsResponse = await write(batch, timeout=10)
    finally:
        await channel.close()
    assert reply.accepted == 1
    assert [r.index for r in reply.rejected] == [1, 2, 3, 4]
    assert "not valid protobuf" in reply.rejected[0].reason
    stats = await _drained(stub)
    assert dict(stats.rejected) == {
        "record:malformed": 1,
        "record:too_large": 1,
        "request_id:missing": 1,
        "provider:bad_characters": 1,
    }
    assert stats.stored == 1
    got = await stub.GetRecord(logger_pb2.GetRecordRequest(request_id="req-00001"))
    assert got.record == make_record(1)
    assert logger_process.proc.poll() is None


async def test_shipper_never_blocks_when_the_logger_is_down() -> None:
    shipper = RecordShipper(
        f"127.0.0.1:{free_port()}", queue_size=100, batch_size=10, flush_interval_s=0.01
    )
    await shipper.start()
    started = time.perf_counter()
    for i in range(2000):
        shipper.submit(make_record(i))
    assert time.perf_counter() - started < 0.5
    await until(lambda: shipper.failed_batches >= 1, 10, "a failed delivery")
    assert shipper.dropped >= 2000 - 100 - 10
    started = time.perf_counter()
    await shipper.close(timeout_s=0.5)
    assert time.perf_counter() - started < 1.0
    assert shipper.sent == 0
    assert shipper.dropped + shipper.abandoned == 2000


async def test_shipper_delivers_once_the_logger_comes_back(tmp_path: Path) -> None:
    port = free_port()
    shipper = RecordShipper(
        f"127.0.0.1:{port}", queue_size=1000, batch_size=20, flush_interval_s=0.01
    )
    shipper.backoff_max_s = 0.2
    await shipper.start()
    for i in range(50):
        shipper.submit(make_record(i))
    await until(lambda: shipper.failed_batches >= 1, 10, "a failed delivery")
    assert shipper.sent == 0
    config = write_config(
        tmp_path / "mesh.yaml", {"logger": {"port": port, "sqlite_path": str(tmp_path / "r.db")}}
    )
    service = start_service(
        ["hybridinference.logger"], config, f"127.0.0.1:{port}", tmp_path, "logger"
    )
    try:
        await shipper.close(timeout_s=15)
        assert (shipper.sent, shipper.dropped, shipper.abandoned) == (50, 0, 0)
    finally:
        assert service.stop() == 0
    with sqlite3.connect(tmp_path / "r.db") as db:
        assert db.execute("SELECT count(*) FROM request_log").fetchone() == (50,)


async def test_idle_shipper_closes_immediately() -> None:
    shipper = RecordShipper(
        f"127.0.0.1:{free_port()}", queue_size=10, batch_size=10, flush_interval_s=0.01
    )
    await shipper.start()
    started = time.perf_counter()
    await shipper.close(timeout_s=5)
    assert time.perf_counter() - started < 0.5


def test_failed_migration_stops_the_logger(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE request_log (x INTEGER)")
    port = free_port()
    config = write_config(
        tmp_path / "mesh.yaml", {"logger": {"port": port, "sqlite_path": str(path)}}
    )
    service = start_service(
        ["hybridinference.logger"], config, f"127.0.0.1:{port}", tmp_path, "logger", wait=False
    )
    try:
        code = service.proc.wait(timeout=20)
    finally:
        service.stop()
    assert code != 0
    assert "SQLite migration 0001_request_log failed" in service.logs()


async def test_cli_logs_and_usage_against_the_logger(
    logger_process: ServiceProcess,
    stub: logger_pb2_grpc.LoggerServiceStub,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    await stub.WriteRecords(
        logger_pb2.WriteRecordsRequest(records=[make_record(i) for i in range(9)])
    )
    await _drained(stub)
    config = str(tmp_path / "mesh.yaml")
    capsys.readouterr()
    argv = ["--config", config, "usage", "--since", "2025-06-01", "--until", "2025-07-01"]
    assert await asyncio.to_thread(cli_main, [*argv, "--key", "key-1", "--json"]) == 0
    lines = [orjson.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {(b["api_key_id"], b["model"]) for b in lines} == {
        ("key-1", "gpt-x"),
        ("key-1", "hi-sim"),
    }
    assert sum(int(b["requests"]) for b in lines) == 3  # records 1, 4 and 7
    assert await asyncio.to_thread(cli_main, argv) == 0
    assert capsys.readouterr().out.splitlines()[-1].split()[:2] == ["total", "9"]
    listing = ["--config", config, "logs", "--list", "--key", "key-2", "--json"]
    assert await asyncio.to_thread(cli_main, listing) == 0
    ids = [orjson.loads(line)["request_id"] for line in capsys.readouterr().out.splitlines()]
    assert ids == ["req-00008", "req-00005", "req-00002"]


async def test_cli_logs_id_finds_every_request_sent_with_that_id(
    logger_process: ServiceProcess,
    stub: logger_pb2_grpc.LoggerServiceStub,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Two requests sent with one x-request-id are two records (their keys differ), and
    `hybridinference logs ID` prints both, oldest first; a record's own key finds it too."""
    records = [make_record(i, client_request_id="client-twice") for i in (3, 4)]
    # As a logger upgraded from before the caller's id was kept stored its rows: the key only.
    records.append(make_record(5, request_id="older-row", client_request_id=""))
    reply = await stub.WriteRecords(logger_pb2.WriteRecordsRequest(records=records))
    assert reply.accepted == 3
    await _drained(stub)
    config = str(tmp_path / "mesh.yaml")
    capsys.readouterr()
    assert await asyncio.to_thread(cli_main, ["--config", config, "logs", "client-twice"]) == 0
    out = capsys.readouterr().out
    keys = [line.split('"')[3] for line in out.splitlines() if line.startswith('  "request_id"')]
    assert keys == ["req-00003", "req-00004"]
    assert await asyncio.to_thread(cli_main, ["--config", config, "logs", "older-row"]) == 0
    assert '"request_id": "older-row"' in capsys.readouterr().out
    assert await asyncio.to_thread(cli_main, ["--config", config, "logs", "req-00004"]) == 0
    assert '"client_request_id": "client-twice"' in capsys.readouterr().out
    assert await asyncio.to_thread(cli_main, ["--config", config, "logs", "no-such"]) != 0
    assert "no record with request id 'no-such'" in capsys.readouterr().err
