"""What metrics cost the request path: ``.venv/bin/python bench/metrics_overhead.py``.

1. micro:  per-request cost of the domain calls (the gateway's observe_request, the router's
           note_routed) and of one call through the RPC interceptor's wrapper vs the bare handler.
2. mesh:   the whole mesh (launcher: Envoy, gateway, router, sim worker, logger) with /metrics on
           (every service serving it, interceptor installed) vs off (metrics ports 0: no
           interceptor, no server); unary Chat through Envoy at concurrency 1 and 16, runs
           alternated on/off to spread drift. The sim answers at once (ttft 0, 16 tokens), so
           the numbers are the mesh's own overhead.

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
from prometheus_client import Counter

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hybridinference.common.metrics import RpcMetricsInterceptor
from hybridinference.common.v1 import chat_pb2
from hybridinference.gateway import metrics as gateway_metrics
from hybridinference.gateway.chat_call import ChatCall
from hybridinference.gateway.execution import Execution
from hybridinference.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from hybridinference.router import metrics as router_metrics
from hybridinference.router.endpoints import Model
from hybridinference.router.v1 import router_pb2
from support.mesh import mesh_config
from support.procs import REPO, free_port, wait_healthy, write_config

REPEATS = 7


def _per_call_us(fn: Any, n: int) -> float:
    """Best of several repeats: other processes on the cores only ever add time."""
    best = float("inf")
    for _ in range(REPEATS):
        start = time.perf_counter()
        for _ in range(n // REPEATS):
            fn()
        best = min(best, (time.perf_counter() - start) / (n // REPEATS))
    return best * 1e6


def micro(n: int) -> dict[str, float]:
    execution = Execution(
        "req-1",
        ChatCall(model="hi-sim", messages=[], sampling=chat_pb2.SamplingParams(), stream=True),
        "openai",
    )
    execution.selection = router_pb2.Selection(endpoint="sim-a", attempts=1)
    execution.completion = router_pb2.Completion(cost_usd=0.0001)
    execution.completion.usage.prompt_tokens = 20
    execution.completion.usage.completion_tokens = 16
    execution.first_token_monotonic = time.monotonic()
    model = Model(name="hi-sim", endpoints=(), strategy="round_robin", owned_by="x")
    calibration = Counter("bench_calibration_total", "one bare prometheus-client inc()")
    results = {
        # One bare Counter.inc(): divides the rows below into "metric operations".
        "counter_inc_us": _per_call_us(calibration.inc, n),
        "gateway_observe_request_us": _per_call_us(
            lambda: gateway_metrics.observe_request(execution), n
        ),
        "router_note_routed_us": _per_call_us(
            lambda: router_metrics.note_routed(model, "sim-a"), n
        ),
    }
    results.update(asyncio.run(_interceptor_micro(n)))
    return results


async def _interceptor_micro(n: int) -> dict[str, float]:
    class Context:
        def code(self) -> None:
            return None

    async def handler(request: object, context: object) -> object:
        return request

    bare = grpc.unary_unary_rpc_method_handler(handler)
    interceptor = RpcMetricsInterceptor()

    async def continuation(details: object) -> grpc.RpcMethodHandler:
        return bare

    class Details:
        method = "/bench.Service/Method"

    wrapped = await interceptor.intercept_service(continuation, Details())
    context = Context()

    async def best_us(call: Any) -> float:
        best = float("inf")
        for _ in range(REPEATS):
            start = time.perf_counter()
            for _ in range(n // REPEATS):
                await call()
            best = min(best, (time.perf_counter() - start) / (n // REPEATS))
        return best * 1e6

    async def run(h: grpc.RpcMethodHandler) -> float:
        return await best_us(lambda: h.unary_unary(None, context))

    async def intercept() -> float:
        return await best_us(lambda: interceptor.intercept_service(continuation, Details()))

    bare_us = await run(bare)
    wrapped_us = await run(wrapped)
    return {
        "rpc_wrapper_extra_us": wrapped_us - bare_us,
        "rpc_intercept_lookup_us": await intercept(),
    }


def _mesh(tmp: Path, metrics_on: bool) -> tuple[subprocess.Popen[bytes], str]:
    config = mesh_config(tmp)
    worker = config["providers"][0]
    worker["endpoints"][0]["sim"] = {"ttft_ms": 0, "itl_ms": 0, "output_tokens": 16}
    for section in ("gateway", "router", "logger"):
        config[section]["metrics_port"] = free_port() if metrics_on else 0
    worker["metrics_port"] = free_port() if metrics_on else 0
    config["log_level"] = "WARNING"
    path = write_config(tmp / "mesh.yaml", config)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hybridinference.launcher",
            "--config",
            str(path),
            "--var-dir",
            f"{tmp}/var",
        ],
        cwd=REPO,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    target = f"127.0.0.1:{config['envoy']['port']}"
    wait_healthy(target, timeout_s=60, proc=proc)
    return proc, target


async def _load(target: str, concurrency: int, seconds: float) -> dict[str, float]:
    request = gateway_pb2.ChatRequest(
        model="hi-sim", messages=[chat_pb2.ChatMessage(role="user", content="hello")]
    )
    async with grpc.aio.insecure_channel(target) as channel:
        stub = gateway_pb2_grpc.GatewayServiceStub(channel)
        for _ in range(50):  # warm-up: connections, caches, label children
            await stub.Chat(request)
        latencies: list[float] = []
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            while time.perf_counter() < deadline:
                start = time.perf_counter()
                await stub.Chat(request)
                latencies.append(time.perf_counter() - start)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "rps": len(latencies) / elapsed,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000,
    }


def mesh(seconds: float, rounds: int) -> dict[str, Any]:
    runs: dict[str, dict[int, list[dict[str, float]]]] = {"on": {}, "off": {}}
    for _ in range(rounds):
        for label in ("on", "off"):
            with tempfile.TemporaryDirectory() as tmp:
                proc, target = _mesh(Path(tmp), label == "on")
                try:
                    for concurrency in (1, 16):
                        result = asyncio.run(_load(target, concurrency, seconds))
                        runs[label].setdefault(concurrency, []).append(result)
                finally:
                    proc.send_signal(signal.SIGTERM)
                    proc.wait(60)
    summary: dict[str, Any] = {}
    for label, by_concurrency in runs.items():
        for concurrency, results in by_concurrency.items():
            summary[f"{label}_c{concurrency}"] = {
                key: round(statistics.median(r[key] for r in results), 3) for key in results[0]
            }
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="per load run")
    parser.add_argument("--rounds", type=int, default=2, help="on/off pairs")
    parser.add_argument("--micro-calls", type=int, default=200_000)
    args = parser.parse_args()
    result = {
        "micro": {k: round(v, 3) for k, v in micro(args.micro_calls).items()},
        "mesh": mesh(args.seconds, args.rounds),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
