"""``make bench``: the mesh end to end against the upstream directly, in the same run.

    .venv/bin/python -m bench.suite [--smoke] [--layout L] [--out bench/results/latest.json]

Starts the fake upstream and the whole mesh (launcher: Envoy, gateway, router, vllm worker,
logger; metrics, request logging, validation and routing on; auth off), then measures, each
against the same upstream directly:

- latency p50/p99 at concurrency 1 and 32 (OpenAI surface through Envoy, non-streaming, wrk);
  added latency = mesh - direct; the c=32 run is time-bounded and also gives the saturation
  throughput and the CPU per request summed over every mesh process (from /proc);
- 20-chunk streams (tokens 0.5 ms apart upstream) at saturation: streams/s, CPU per stream;
- time to first token and inter-token gaps of single streams (Python client);
- the typed gRPC API (GatewayService.Chat through Envoy) at c=1 and c=32 (Python generator);
- peak RSS per mesh process.

Writes JSON (keys listed in README's Performance section) and prints a table. ``--smoke`` runs
a handful of requests per phase: it checks that the suite works, not how fast the mesh is.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from bench.suite import grpc_load, procstats, report, stream_probe, wrk
from bench.suite.mesh import (
    FAST_MODEL,
    LAYOUTS,
    STREAM_MODEL,
    fake_upstream,
    running,
    upstream_model,
)

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "bench" / "results"


def default_out(layout: str) -> Path:
    """latest.json for the default (separate) mesh, latest-<layout>.json for the others."""
    return RESULTS / ("latest.json" if layout == "separate" else f"latest-{layout}.json")


TOKENS = 20


def _body(model: str, stream: bool) -> bytes:
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": "hello benchmark"}],
        "max_tokens": TOKENS,
    }
    if stream:
        body["stream"] = True
    return orjson.dumps(body)


def _machine() -> dict[str, Any]:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "hostname": platform.node(),
        "cpus": os.cpu_count(),
        "cpu_model": cpu,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "load_average_before": [round(x, 2) for x in os.getloadavg()],
    }


def _wrk_pair(
    direct_url: str,
    mesh_url: str,
    model: str,
    stream: bool,
    connections: int,
    requests: int,
    seconds: float,
    meter: procstats.CpuMeter,
) -> tuple[wrk.WrkResult, wrk.WrkResult, dict[str, float]]:
    """The same load on the upstream directly, then through the mesh (mesh CPU metered)."""
    direct = wrk.run(
        direct_url, _body(upstream_model(model), stream), connections, requests, seconds
    )
    meter.start()
    through = wrk.run(mesh_url, _body(model, stream), connections, requests, seconds)
    cpu = meter.stop()
    if through.errors or direct.errors:
        raise RuntimeError(f"errors during the run: mesh {through}, direct {direct}")
    return direct, through, cpu


def _per_request_ms(cpu: dict[str, float], requests: int) -> dict[str, float]:
    return {name: round(s * 1000 / max(requests, 1), 3) for name, s in cpu.items()}


def _run_dict(result: wrk.WrkResult) -> dict[str, float]:
    return {
        "requests": result.requests,
        "rps": round(result.rps, 1),
        "p50_ms": result.p50_ms,
        "p90_ms": result.p90_ms,
        "p99_ms": result.p99_ms,
        "client_cpu_s": round(result.client_cpu_s, 3),
    }


def measure(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    smoke = args.smoke
    seconds = 1.0 if smoke else args.seconds
    c1_requests = 20 if smoke else args.c1_requests
    cap = 50 if smoke else 1_000_000
    streams = 5 if smoke else 200
    result: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": _machine(),
        "smoke": smoke,
        "layout": args.layout,
        "tokens_per_response": TOKENS,
    }
    runs: dict[str, Any] = {}
    with (
        fake_upstream() as (upstream_url, upstream_proc),
        running(tmp, upstream_url, args.layout) as mesh,
    ):
        procs = procstats.mesh_processes(mesh.proc.pid)
        upstream = procstats.Proc(upstream_proc.pid, "fake-upstream")
        meter = procstats.CpuMeter(procs)
        direct_url = f"{upstream_url}/chat/completions"
        mesh_url = f"{mesh.http_url}/v1/chat/completions"
        # Warm-up: connections, lazy imports, label caches, JIT-free but cache-warm code paths.
        wrk.run(mesh_url, _body(FAST_MODEL, False), 8, 50 if smoke else 500, 3)
        wrk.run(mesh_url, _body(STREAM_MODEL, True), 8, 50 if smoke else 300, 3)

        direct1, mesh1, _ = _wrk_pair(
            direct_url, mesh_url, FAST_MODEL, False, 1, c1_requests, seconds * 3, meter
        )
        runs["nonstream_c1"] = {"direct": _run_dict(direct1), "mesh": _run_dict(mesh1)}
        result["added_latency_p50_ms_c1"] = round(mesh1.p50_ms - direct1.p50_ms, 3)
        result["added_latency_p99_ms_c1"] = round(mesh1.p99_ms - direct1.p99_ms, 3)

        upstream_before = procstats.cpu_s(upstream.pid)
        direct32, mesh32, cpu32 = _wrk_pair(
            direct_url, mesh_url, FAST_MODEL, False, 32, cap, seconds, meter
        )
        runs["nonstream_c32"] = {"direct": _run_dict(direct32), "mesh": _run_dict(mesh32)}
        result["added_latency_p50_ms_c32"] = round(mesh32.p50_ms - direct32.p50_ms, 3)
        result["added_latency_p99_ms_c32"] = round(mesh32.p99_ms - direct32.p99_ms, 3)
        result["rps_nonstream"] = round(mesh32.rps, 1)
        result["rps_direct_nonstream"] = round(direct32.rps, 1)
        by_process = _per_request_ms(cpu32, mesh32.requests)
        result["cpu_ms_per_request_by_process"] = by_process
        result["cpu_ms_per_request"] = round(sum(by_process.values()), 3)
        result["client_cpu_ms_per_request"] = round(
            mesh32.client_cpu_s * 1000 / max(mesh32.requests, 1), 3
        )
        result["upstream_cpu_ms_per_request"] = round(
            (procstats.cpu_s(upstream.pid) - upstream_before)
            * 1000
            / max(mesh32.requests + direct32.requests, 1),
            3,
        )

        direct_s, mesh_s, cpu_s = _wrk_pair(
            direct_url, mesh_url, STREAM_MODEL, True, 64, cap, seconds, meter
        )
        runs["stream_c64"] = {"direct": _run_dict(direct_s), "mesh": _run_dict(mesh_s)}
        result["rps_stream"] = round(mesh_s.rps, 1)
        result["rps_direct_stream"] = round(direct_s.rps, 1)
        by_stream = _per_request_ms(cpu_s, mesh_s.requests)
        result["cpu_ms_per_stream_by_process"] = by_stream
        result["cpu_ms_per_stream"] = round(sum(by_stream.values()), 3)

        direct_t = asyncio.run(
            stream_probe.measure(direct_url, _body(upstream_model(STREAM_MODEL), True), streams)
        )
        mesh_t = asyncio.run(stream_probe.measure(mesh_url, _body(STREAM_MODEL, True), streams))
        runs["stream_probe_c1"] = {"direct": direct_t.__dict__, "mesh": mesh_t.__dict__}
        result["ttft_overhead_p50_ms"] = round(mesh_t.ttft_p50_ms - direct_t.ttft_p50_ms, 3)
        result["ttft_overhead_p99_ms"] = round(mesh_t.ttft_p99_ms - direct_t.ttft_p99_ms, 3)
        result["itl_overhead_p50_ms"] = round(mesh_t.itl_p50_ms - direct_t.itl_p50_ms, 3)

        grpc1 = grpc_load.run(mesh.envoy_grpc, FAST_MODEL, 1, 1, c1_requests, seconds * 3)
        grpc32 = grpc_load.run(mesh.envoy_grpc, FAST_MODEL, 2, 32, cap, seconds)
        runs["grpc_chat"] = {
            "c1": {"requests": grpc1.requests, "p50_ms": grpc1.percentile_ms(0.5),
                   "p99_ms": grpc1.percentile_ms(0.99)},
            "c32": {"requests": grpc32.requests, "rps": round(grpc32.rps, 1),
                    "p50_ms": grpc32.percentile_ms(0.5), "p99_ms": grpc32.percentile_ms(0.99),
                    "client_cpu_s": round(grpc32.client_cpu_s, 3)},
        }  # fmt: skip
        if grpc1.errors or grpc32.errors:
            raise RuntimeError(f"typed gRPC errors: {grpc1.errors} at c=1, {grpc32.errors} at c=32")
        # Against the same direct HTTP baseline: the upstream has no gRPC surface.
        result["grpc_added_latency_p50_ms_c1"] = round(grpc1.percentile_ms(0.5) - direct1.p50_ms, 3)
        result["grpc_rps_nonstream"] = round(grpc32.rps, 1)

        result["rss_mb"] = {p.name: round(procstats.peak_rss_mb(p.pid), 1) for p in procs}
        result["rss_mb"]["fake-upstream"] = round(procstats.peak_rss_mb(upstream.pid), 1)
    result["runs"] = runs
    result["machine"]["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny counts: checks it runs")
    parser.add_argument(
        "--out", type=Path, default=None, help="default: bench/results/latest*.json"
    )
    parser.add_argument("--seconds", type=float, default=8.0, help="length of saturation runs")
    parser.add_argument("--c1-requests", type=int, default=2000)
    parser.add_argument(
        "--layout",
        choices=LAYOUTS,
        default="separate",
        help="separate processes; the vllm worker inside the router; or both in the gateway",
    )
    args = parser.parse_args()
    if not wrk.available():
        print("bench: wrk not found (apt-get install wrk)", file=sys.stderr)
        return 2
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="hi-bench-") as tmp:
        result = measure(args, Path(tmp))
    result["elapsed_s"] = round(time.monotonic() - started, 1)
    out: Path = args.out or default_out(args.layout)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(report.table(result))
    print(f"\nwritten: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
