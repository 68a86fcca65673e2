"""Load for the typed gRPC API (GatewayService.Chat or ChatStream) from several processes.

    python -m bench.suite.grpc_load --target HOST:PORT --concurrency 16 --requests 2000 \
        --duration 10 [--stream] [--tokens 20]

Each process runs ``concurrency`` callers on one channel (uvloop) until its share of
``requests`` is done or ``duration`` seconds passed, and writes one JSON object (to ``--out``,
or stdout): completed calls, errors, elapsed seconds and the latencies in milliseconds. ``run``
starts the processes and merges their results; their CPU time is measured so it can be kept
apart from the mesh's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
import uvloop

from hybridinference.common.v1 import chat_pb2
from hybridinference.gateway.v1 import gateway_pb2, gateway_pb2_grpc

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class GrpcResult:
    requests: int
    errors: int
    duration_s: float
    latencies_ms: list[float]
    client_cpu_s: float

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0

    def percentile_ms(self, q: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


async def _worker(args: argparse.Namespace) -> dict[str, object]:
    channel = grpc.aio.insecure_channel(args.target)
    stub = gateway_pb2_grpc.GatewayServiceStub(channel)
    messages = [chat_pb2.ChatMessage(role="user", content="hello benchmark")]
    sampling = chat_pb2.SamplingParams(max_tokens=args.tokens)
    latencies: list[float] = []
    errors = 0
    remaining = args.requests
    deadline = time.monotonic() + args.duration

    async def caller() -> None:
        nonlocal remaining, errors
        while remaining > 0 and time.monotonic() < deadline:
            remaining -= 1
            started = time.perf_counter()
            try:
                if args.stream:
                    request = gateway_pb2.ChatStreamRequest(
                        model=args.model, messages=messages, sampling=sampling
                    )
                    async for _ in stub.ChatStream(request, timeout=10):
                        pass
                else:
                    await stub.Chat(
                        gateway_pb2.ChatRequest(
                            model=args.model, messages=messages, sampling=sampling
                        ),
                        timeout=10,
                    )
            except grpc.aio.AioRpcError:
                errors += 1
                continue
            latencies.append((time.perf_counter() - started) * 1000)

    await channel.channel_ready()
    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(args.concurrency)))
    elapsed = time.perf_counter() - started
    await channel.close()
    return {"requests": len(latencies), "errors": errors, "elapsed_s": elapsed,
            "latencies_ms": latencies}  # fmt: skip


def run(
    target: str,
    model: str,
    processes: int,
    concurrency: int,
    requests: int,
    duration_s: float,
    stream: bool = False,
    tokens: int = 20,
) -> GrpcResult:
    """``concurrency`` callers in total, spread over ``processes`` processes."""
    per_proc = max(1, concurrency // processes)
    argv_base = [
        sys.executable, "-m", "bench.suite.grpc_load", "--target", target, "--model", model,
        "--concurrency", str(per_proc), "--requests", str(-(-requests // processes)),
        "--duration", str(duration_s), "--tokens", str(tokens),
    ]  # fmt: skip
    if stream:
        argv_base.append("--stream")
    results: list[dict[str, object]] = []
    cpu = 0.0
    # Results go through files: a worker's stdout can be non-blocking (the event loop's doing),
    # and one that printed into a full pipe the parent was not reading yet lost its tail.
    with tempfile.TemporaryDirectory(prefix="hi-grpc-load-") as tmp:
        outs = [Path(tmp) / f"worker-{index}.json" for index in range(processes)]
        procs = [subprocess.Popen([*argv_base, "--out", str(out)], cwd=REPO) for out in outs]
        for proc, out in zip(procs, outs, strict=True):
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
            cpu += usage.ru_utime + usage.ru_stime
            if proc.returncode != 0:
                raise RuntimeError(f"grpc_load worker failed ({proc.returncode})")
            results.append(json.loads(out.read_text()))
    latencies = [float(x) for r in results for x in r["latencies_ms"]]  # type: ignore[attr-defined]
    return GrpcResult(
        requests=len(latencies),
        errors=sum(int(r["errors"]) for r in results),  # type: ignore[call-overload]
        duration_s=max(float(r["elapsed_s"]) for r in results),
        latencies_ms=latencies,
        client_cpu_s=cpu,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", required=True)
    parser.add_argument("--model", default="bench")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--tokens", type=int, default=20)
    parser.add_argument("--stream", action="store_true")
    parser.add_argument("--out", type=Path, default=None, help="write the JSON here")
    args = parser.parse_args()
    result = json.dumps(uvloop.run(_worker(args)))
    if args.out is None:
        print(result)
    else:
        args.out.write_text(result)


if __name__ == "__main__":
    main()
