"""`hybridinference usage` and the filters of `hybridinference logs --list` (pure parts)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from hybridinference.cli import logs, rpc, usage
from hybridinference.cli.__main__ import build_parser
from hybridinference.cli.times import parse_time
from hybridinference.logger.v1 import logger_pb2

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


def test_parse_time() -> None:
    assert parse_time("2026-03-01") == datetime(2026, 3, 1, tzinfo=UTC)
    assert parse_time("2026-03-01T05:30+02:00") == datetime(2026, 3, 1, 3, 30, tzinfo=UTC)
    assert parse_time("36h", now=NOW) == datetime(2026, 3, 9, 0, 0, tzinfo=UTC)
    assert parse_time("7d", now=NOW) == datetime(2026, 3, 3, 12, 0, tzinfo=UTC)
    with pytest.raises(ValueError, match="is not a time"):
        parse_time("yesterday")


def test_usage_request() -> None:
    args = build_parser().parse_args(
        ["usage", "--since", "2026-03-01", "--until", "2026-03-05", "--key", "k1"]
    )
    request = usage.build_request(args)
    assert request.start_time.ToDatetime(tzinfo=UTC) == datetime(2026, 3, 1, tzinfo=UTC)
    assert request.end_time.ToDatetime(tzinfo=UTC) == datetime(2026, 3, 5, tzinfo=UTC)
    assert (request.api_key_id, request.model) == ("k1", "")
    default = usage.build_request(build_parser().parse_args(["usage"]))
    assert default.HasField("start_time") and not default.HasField("end_time")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["usage", "--since", "soon"], "is not a time"),
        (["usage", "--since", "2026-03-05", "--until", "2026-03-01"], "before --until"),
    ],
)
def test_usage_bad_arguments(argv: list[str], message: str) -> None:
    with pytest.raises(rpc.CliError, match=message):
        usage.build_request(build_parser().parse_args(argv))


def test_usage_table_has_a_total_line() -> None:
    buckets = [
        logger_pb2.UsageBucket(
            api_key_id="k1", model="hi-sim", requests=3, errors=1, total_tokens=90, cost_usd=0.5
        ),
        logger_pb2.UsageBucket(model="gpt-x", requests=2, total_tokens=10, cost_usd=0.25),
    ]
    buckets[0].day.FromDatetime(datetime(2026, 3, 1, tzinfo=UTC))
    buckets[1].day.FromDatetime(datetime(2026, 3, 2, tzinfo=UTC))
    lines = usage.usage_table(buckets).splitlines()
    assert lines[1].split() == ["2026-03-01", "k1", "hi-sim", "3", "1", "0", "0", "90", "0.500000"]
    assert lines[2].split()[:3] == ["2026-03-02", "-", "gpt-x"]
    assert lines[3].split() == ["total", "5", "1", "0", "0", "100", "0.750000"]


def test_logs_list_filters() -> None:
    args = build_parser().parse_args(
        ["logs", "--list", "--provider", "vllm", "--status", "OK", "--key", "k1", "--since", "1h"]
    )
    assert logs.validate(args) is None
    request = logs.list_request(args)
    assert (request.provider, request.status, request.api_key_id) == ("vllm", "OK", "k1")
    assert request.HasField("start_time") and not request.HasField("end_time")
    assert "only apply with --list" in (
        logs.validate(build_parser().parse_args(["logs", "r1", "--status", "OK"])) or ""
    )
    assert "--since" in (
        logs.validate(build_parser().parse_args(["logs", "--list", "--since", "x"])) or ""
    )
