"""Routing study: every policy against the same synthetic hybrid workload, through the real router
and real sim workers (support/sim_mesh.py).

Workload: two local endpoints (zero price, 4 generations at a time each, the rest queue) and two
cloud endpoints (priced per token, slower first tokens with heavy tails). Poisson arrivals at a
fixed rate, prompts drawn from a few shared system prompts. For each policy a fresh mesh runs
the same seeded request sequence; the table gives client-side TTFT p50/p99, cost per 1k
requests, error rate and the share served locally.

    .venv/bin/python bench/routing_study.py [--rate 45] [--requests 900] [--policies a,b]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hybridinference.common.v1 import chat_pb2
from hybridinference.router.v1 import router_pb2, router_pb2_grpc
from support.sim_mesh import SimMesh, endpoint

LOCAL = {
    "ttft_ms": 40,
    "ttft_jitter_ms": 20,
    "itl_ms": 4,
    "output_tokens": 16,
    "max_concurrency": 4,
}
WORKERS = {
    "local": [
        endpoint("local-1", locality="local", **LOCAL),
        endpoint("local-2", locality="local", **LOCAL),
    ],
    "cloud": [
        endpoint(
            "cloud-fast",
            price=(2.5, 10.0),
            ttft_ms=150,
            ttft_jitter_ms=100,
            tail_rate=0.03,
            tail_ms=1500,
            itl_ms=2,
            output_tokens=16,
        ),
        endpoint(
            "cloud-cheap",
            price=(0.15, 0.6),
            ttft_ms=300,
            ttft_jitter_ms=200,
            tail_rate=0.08,
            tail_ms=2500,
            itl_ms=3,
            output_tokens=16,
        ),
    ],
}
ENDPOINTS = ["local-1", "local-2", "cloud-fast", "cloud-cheap"]
POLICIES: dict[str, dict[str, Any]] = {
    "round_robin": {},
    "weighted": {"weights": {"local-1": 3, "local-2": 3, "cloud-fast": 1, "cloud-cheap": 1}},
    "cost": {"ttft_slo_ms": 250},
    "latency": {},
    "least_load": {},
    "prefix_affinity": {},
    "local_first": {"local_first": {"max_in_flight": 4, "max_ttft_ms": 400}},
}


@dataclass
class Result:
    ttft_ms: list[float] = field(default_factory=list)
    cost_usd: float = 0.0
    errors: int = 0
    local: int = 0
    total: int = 0


def prompts(rng: random.Random, count: int) -> list[list[chat_pb2.ChatMessage]]:
    systems = [
        f"You are assistant number {i}. " + " ".join(f"rule{i}-{j}" for j in range(80))
        for i in range(16)
    ]
    return [
        [
            chat_pb2.ChatMessage(role="system", content=rng.choice(systems)),
            chat_pb2.ChatMessage(role="user", content=f"question {rng.randrange(10**6)}"),
        ]
        for _ in range(count)
    ]


async def one(
    stub: router_pb2_grpc.RouterServiceStub,
    messages: list[chat_pb2.ChatMessage],
    result: Result,
    index: int,
) -> None:
    started = time.monotonic()
    first_token: float | None = None
    try:
        call = stub.Route(
            router_pb2.RouteRequest(request_id=f"study-{index}", model="study", messages=messages),
            timeout=30,
        )
        async for event in call:
            if event.delta and first_token is None:
                first_token = time.monotonic()
            if event.HasField("selection"):
                result.local += event.selection.endpoint.startswith("local")
            if event.HasField("completion"):
                result.cost_usd += event.completion.cost_usd
    except grpc.aio.AioRpcError:
        result.errors += 1
        return
    finally:
        result.total += 1
    if first_token is not None:
        result.ttft_ms.append((first_token - started) * 1000)


async def drive(address: str, rate: float, requests: int, seed: int) -> Result:
    rng = random.Random(seed)
    conversation = prompts(rng, requests)
    gaps = [rng.expovariate(rate) for _ in range(requests)]
    result = Result()
    async with grpc.aio.insecure_channel(address) as channel:
        stub = router_pb2_grpc.RouterServiceStub(channel)
        tasks = []
        next_at = time.monotonic()
        for i in range(requests):
            next_at += gaps[i]
            delay = next_at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(stub, conversation[i], result, i)))
        await asyncio.gather(*tasks)
    return result


def quantile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def run_policy(name: str, rate: float, requests: int, seed: int) -> Result:
    with tempfile.TemporaryDirectory(prefix=f"study-{name}-") as tmp:
        model = {"name": "study", "endpoints": ENDPOINTS, "strategy": name, **POLICIES[name]}
        mesh = SimMesh(Path(tmp), WORKERS, [model], router={"reload_poll_interval_s": 0})
        try:
            return asyncio.run(drive(mesh.router_address, rate, requests, seed))
        finally:
            mesh.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=45.0, help="requests per second")
    parser.add_argument("--requests", type=int, default=900)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--policies", default=",".join(POLICIES))
    args = parser.parse_args()
    names = [n for n in args.policies.split(",") if n]
    unknown = [n for n in names if n not in POLICIES]
    if unknown:
        parser.error(f"unknown policies {unknown}; known: {', '.join(POLICIES)}")
    print(f"rate {args.rate}/s, {args.requests} requests per policy, seed {args.seed}")
    print()
    print("| policy | p50 TTFT ms | p99 TTFT ms | cost $/1k req | errors | served locally |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in names:
        r = run_policy(name, args.rate, args.requests, args.seed)
        p50 = statistics.median(r.ttft_ms) if r.ttft_ms else float("nan")
        print(
            f"| {name} | {p50:.0f} | {quantile(r.ttft_ms, 0.99):.0f} | "
            f"{r.cost_usd / max(1, r.total) * 1000:.3f} | {r.errors / max(1, r.total):.1%} | "
            f"{r.local / max(1, r.total):.0%} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
