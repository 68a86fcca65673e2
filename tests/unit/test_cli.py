"""The hybridinference CLI: argument handling and output formatting, no servers."""

from __future__ import annotations

import argparse

import pytest

from hybridinference.cli import chat, logs, models, rpc, status
from hybridinference.cli.__main__ import build_parser, main
from hybridinference.cli.table import format_table
from hybridinference.common.settings import load_settings
from hybridinference.common.v1 import chat_pb2
from hybridinference.gateway.v1 import gateway_pb2
from hybridinference.logger.v1 import logger_pb2
from hybridinference.router.v1 import router_pb2


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(list(argv))


def test_chat_arguments() -> None:
    args = parse("chat", "hello", "--model", "m", "--max-tokens", "5", "--direct")
    assert (args.prompt, args.model, args.max_tokens, args.direct) == ("hello", "m", 5, True)
    assert args.run is chat.run


@pytest.mark.parametrize("bad", [["chat"], ["chat", "x", "--max-tokens", "0"], ["nope"], []])
def test_bad_arguments_exit_2(bad: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse(*bad)
    assert exit_info.value.code == 2


def test_missing_config_file_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--config", "/nonexistent/mesh.yaml", "models"]) == 2
    assert "config file not found" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("url", "target"),
    [
        ("http://127.0.0.1:8080", "127.0.0.1:8080"),
        ("http://localhost:9000/", "localhost:9000"),
        ("example.org:81", "example.org:81"),
        ("http://example.org", "example.org:80"),
        ("http://[::1]:8080", "[::1]:8080"),
    ],
)
def test_target_from_url(url: str, target: str) -> None:
    assert rpc.target_from_url(url) == target


@pytest.mark.parametrize("url", ["https://x:1", "http://x:1/v1", "http://x:notaport"])
def test_target_from_url_rejects(url: str) -> None:
    with pytest.raises(rpc.CliError):
        rpc.target_from_url(url)


def test_gateway_target_prefers_envoy() -> None:
    settings = load_settings(None, envoy={"port": 8181}, gateway={"host": "0.0.0.0", "port": 6001})
    assert rpc.gateway_target(settings, None, False) == "127.0.0.1:8181"
    assert rpc.gateway_target(settings, None, True) == "127.0.0.1:6001"
    assert rpc.gateway_target(settings, "http://h:1", False) == "h:1"
    with pytest.raises(rpc.CliError):
        rpc.gateway_target(settings, "http://h:1", True)


def test_chat_request_and_default_model() -> None:
    settings = load_settings(None)
    assert chat.default_model(settings) == settings.models[0].name
    request = chat.build_request("hi-sim", "hello", "be brief", 7)
    assert [(m.role, m.content) for m in request.messages] == [
        ("system", "be brief"),
        ("user", "hello"),
    ]
    assert request.sampling.HasField("max_tokens") and request.sampling.max_tokens == 7
    assert not chat.build_request("m", "x", None, None).sampling.HasField("max_tokens")


def test_chat_footer() -> None:
    last = gateway_pb2.ChatStreamResponse(
        id="r1",
        model="hi-sim-1",
        endpoint="sim-a",
        finish_reason=chat_pb2.FINISH_REASON_STOP,
        usage=chat_pb2.Usage(prompt_tokens=3, completion_tokens=24, total_tokens=27),
    )
    assert chat.footer("r1", last) == (
        "[request r1 · model hi-sim-1 · endpoint sim-a · tokens 3 in / 24 out · finish stop]"
    )
    assert chat.footer("", None) == "[]"


def test_table_alignment() -> None:
    text = format_table(["name", "n", "ok"], [("a", 1, True), ("long-name", 100, False)])
    assert text.splitlines() == [
        "name         n  ok",
        "a            1  yes",
        "long-name  100  no",
    ]


def test_status_tables_and_targets() -> None:
    settings = load_settings(None)
    names = [name for name, _ in status.targets(settings)]
    assert names == ["gateway", "router", "logger", "provider:sim"]
    worker = {**settings.providers[0].model_dump(), "colocated": True}
    colocated = load_settings(None, router={"colocated": True}, providers=[worker])
    # Colocated services have no process to probe: they answer inside the gateway.
    assert [name for name, _ in status.targets(colocated)] == ["gateway", "logger"]
    checks = [status.Check("router", "127.0.0.1:50052", False, "UNAVAILABLE")]
    assert "DOWN" in status.services_table(checks)
    endpoint = router_pb2.EndpointState(
        id="sim-a",
        provider="sim",
        model="hi-sim-1",
        healthy=True,
        in_flight=2,
        requests_total=10,
        failures_total=1,
        circuit_state=router_pb2.CIRCUIT_STATE_OPEN,
        circuit_retry_in_s=12.4,
        locality="local",
        waiting=3,
        ttft_ewma_ms=41.25,
        ttft_p95_ms=80,
    )
    lines = status.endpoints_table([endpoint]).splitlines()
    assert lines[0].split() == [
        "endpoint",
        "provider",
        "model",
        "healthy",
        "detail",
        "in_flight",
        "requests",
        "failures",
        "circuit",
        "where",
        "waiting",
        "ttft_ms",
        "ttft_p95",
        "tpot_ms",
    ]
    assert lines[1].split() == [
        "sim-a", "sim", "hi-sim-1", "yes", "-", "2", "10", "1",
        "open", "(12s)", "local", "3", "41.2", "80.0", "-",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("argv", "problem"),
    [
        (["logs"], "give a REQUEST_ID"),
        (["logs", "r1", "--list"], "not both"),
        (["logs", "r1", "--model", "m"], "only apply with --list"),
        (["logs", "--list", "--limit", "0"], "between 1 and 1000"),
        (["logs", "r1"], None),
        (["logs", "--list", "--model", "m", "--limit", "5"], None),
    ],
)
def test_logs_arguments(argv: list[str], problem: str | None) -> None:
    result = logs.validate(parse(*argv))
    if problem is None:
        assert result is None
    else:
        assert result is not None and problem in result


def test_logs_rendering() -> None:
    record = logger_pb2.RequestRecord(
        request_id="r1",
        requested_model="hi-sim",
        endpoint="sim-a",
        status="OK",
        ttft_ms=12.25,
        latency_ms=80.0,
        usage=chat_pb2.Usage(total_tokens=27),
    )
    record.started_at.FromSeconds(1_700_000_000)
    as_json = logs.record_json(record)
    assert '"request_id": "r1"' in as_json and '"requested_model": "hi-sim"' in as_json
    assert "\n" not in logs.record_json(record, indent=None)
    row = logs.records_table([record]).splitlines()[1].split()
    assert row == ["r1", "2023-11-14", "22:13:20", "hi-sim", "sim-a", "OK", "12.2", "80.0", "27"]


def test_models_table() -> None:
    text = models.models_table(
        [gateway_pb2.Model(id="hi-sim", owned_by="hybridinference", providers=["sim"])]
    )
    assert text.splitlines()[1].split() == ["hi-sim", "hybridinference", "sim"]
