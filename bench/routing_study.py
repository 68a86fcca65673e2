"""Routing study: every policy against the same hybrid fleet and several workload shapes, through
the real router and real sim workers (support/sim_mesh.py).

Fleet: two local endpoints (price 0, TTFT 40-60 ms, 2 generations at a time each, the rest
queue) and two cloud endpoints with heavy TTFT tails: ``cloud-fast`` ($2.50 / $10 per 1M tokens)
and ``cloud-cheap`` ($0.15 / $0.60). Every sim endpoint has a fixed seed, and so does every
arrival sequence, so a policy's run differs from another's only by its decisions (and by the
noise of a shared box).

Shapes (arrival processes; the local endpoints serve ~36 req/s together):

- ``steady``: Poisson at 23 req/s (about 65% of the local capacity).
- ``bursts``: on/off, 2.5 s at 90 req/s (2.5x the local capacity) then 2.5 s at 8 req/s.
- ``heavy_tailed``: log-normal inter-arrival gaps, mean 30 req/s, coefficient of variation 3.
- ``diurnal``: one compressed day, the rate ramping 6 -> 80 -> 6 req/s (sin^2).

For each shape and policy a fresh mesh serves the same seeded request sequence; the client
measures TTFT. Writes a Markdown table and a JSON file (rows and raw samples) to ``--out`` and
prints the table and, per shape, the recommended policy (``hybrid``) against round robin;
bench/routing_study_plots.py draws the PNG plots from the JSON (``make study`` runs both).

    .venv/bin/python bench/routing_study.py [--shapes bursts,steady] [--policies hybrid,cost]
        [--requests 600] [--out bench/results/routing_study]
    var/study-venv/bin/python bench/routing_study_plots.py bench/results/routing_study
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
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
    "max_concurrency": 2,
}
WORKERS = {
    "local": [
        endpoint("local-1", locality="local", seed=11, **LOCAL),
        endpoint("local-2", locality="local", seed=12, **LOCAL),
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
            seed=13,
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
            seed=14,
        ),
    ],
}
ENDPOINTS = ["local-1", "local-2", "cloud-fast", "cloud-cheap"]
RECOMMENDED = "hybrid"
POLICIES: dict[str, dict[str, Any]] = {
    "round_robin": {},
    "weighted": {"weights": {"local-1": 3, "local-2": 3, "cloud-fast": 1, "cloud-cheap": 1}},
    "cost": {"ttft_slo_ms": 250},
    "latency": {},
    "least_load": {},
    "prefix_affinity": {},
    "local_first": {"local_first": {"max_in_flight": 2, "max_ttft_ms": 400}},
    # The recommended configuration (README "Routing", deploy/config example): an SLO the
    # cheap cloud endpoint meets at its p90, and hedging for the tails.
    "hybrid": {"ttft_slo_ms": 800, "hedging": True},
}


# Arrival shapes: seeded gaps (seconds between consecutive requests).


def steady(rng: random.Random, count: int) -> list[float]:
    return [rng.expovariate(23.0) for _ in range(count)]


def bursts(rng: random.Random, count: int) -> list[float]:
    on_s, off_s, high, low = 2.5, 2.5, 90.0, 8.0
    return _thinned(rng, count, high, lambda t: high if t % (on_s + off_s) < on_s else low)


def heavy_tailed(rng: random.Random, count: int) -> list[float]:
    mean, cv = 1 / 30.0, 3.0
    sigma = math.sqrt(math.log(1 + cv * cv))
    mu = math.log(mean) - sigma * sigma / 2
    return [rng.lognormvariate(mu, sigma) for _ in range(count)]


def diurnal(rng: random.Random, count: int) -> list[float]:
    low, high = 6.0, 80.0
    # One "day" lasts as long as the requests take at the mean rate.
    day_s = count / ((low + high) / 2)
    return _thinned(
        rng, count, high, lambda t: low + (high - low) * math.sin(math.pi * t / day_s) ** 2
    )


def _thinned(
    rng: random.Random, count: int, peak: float, rate: Callable[[float], float]
) -> list[float]:
    """A non-homogeneous Poisson process by thinning (Lewis and Shedler)."""
    gaps: list[float] = []
    t = last = 0.0
    while len(gaps) < count:
        t += rng.expovariate(peak)
        if rng.random() * peak <= rate(t):
            gaps.append(t - last)
            last = t
    return gaps


SHAPES: dict[str, Callable[[random.Random, int], list[float]]] = {
    "steady": steady,
    "bursts": bursts,
    "heavy_tailed": heavy_tailed,
    "diurnal": diurnal,
}


@dataclass
class Result:
    ttft_ms: list[float] = field(default_factory=list)
    # (TTFT ms, serving endpoint, hedged) per served request: which requests the tail is made of.
    by_request: list[tuple[float, str, bool]] = field(default_factory=list)
    # (seconds since the start, served locally) per served request, for the share over time.
    served: list[tuple[float, bool]] = field(default_factory=list)
    cost_usd: float = 0.0
    errors: int = 0
    error_codes: dict[str, int] = field(default_factory=dict)
    local: int = 0
    hedged: int = 0
    total: int = 0
    seconds: float = 0.0


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
    t0: float,
) -> None:
    started = time.monotonic()
    first_token: float | None = None
    local = False
    served_by = ""
    hedged = False
    try:
        call = stub.Route(
            router_pb2.RouteRequest(request_id=f"study-{index}", model="study", messages=messages),
            timeout=30,
        )
        async for event in call:
            if event.delta and first_token is None:
                first_token = time.monotonic()
            if event.HasField("selection"):
                served_by = event.selection.endpoint
                local = served_by.startswith("local")
                hedged = event.selection.hedged
                result.hedged += hedged
            if event.HasField("completion"):
                result.cost_usd += event.completion.cost_usd
    except grpc.aio.AioRpcError as error:
        result.errors += 1
        code = error.code().name
        result.error_codes[code] = result.error_codes.get(code, 0) + 1
        return
    finally:
        result.total += 1
    result.local += local
    result.served.append((started - t0, local))
    if first_token is not None:
        result.ttft_ms.append((first_token - started) * 1000)
        result.by_request.append((round(result.ttft_ms[-1], 1), served_by, hedged))


async def drive(address: str, gaps: list[float], seed: int) -> Result:
    rng = random.Random(seed)
    conversation = prompts(rng, len(gaps))
    result = Result()
    async with grpc.aio.insecure_channel(address) as channel:
        stub = router_pb2_grpc.RouterServiceStub(channel)
        await channel.channel_ready()
        tasks = []
        t0 = next_at = time.monotonic()
        for i, gap in enumerate(gaps):
            next_at += gap
            delay = next_at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(stub, conversation[i], result, i, t0)))
        await asyncio.gather(*tasks)
        result.seconds = time.monotonic() - t0
    return result


def quantile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def run(policy: str, shape: str, requests: int, seed: int) -> Result:
    gaps = SHAPES[shape](random.Random(seed), requests)
    with tempfile.TemporaryDirectory(prefix=f"study-{policy}-") as tmp:
        model = {"name": "study", "endpoints": ENDPOINTS, "strategy": policy, **POLICIES[policy]}
        mesh = SimMesh(Path(tmp), WORKERS, [model], router={"reload_poll_interval_s": 0})
        try:
            return asyncio.run(drive(mesh.router_address, gaps, seed))
        finally:
            mesh.close()


@dataclass
class Row:
    shape: str
    policy: str
    p50_ms: float
    p99_ms: float
    cost_per_1k: float
    error_rate: float
    local_share: float
    hedged_share: float
    requests: int

    @classmethod
    def of(cls, shape: str, policy: str, r: Result) -> Row:
        total = max(1, r.total)
        return cls(
            shape,
            policy,
            quantile(r.ttft_ms, 0.5),
            quantile(r.ttft_ms, 0.99),
            r.cost_usd / total * 1000,
            r.errors / total,
            r.local / total,
            r.hedged / total,
            r.total,
        )


def table(rows: list[Row]) -> str:
    lines = [
        "| shape | policy | p50 TTFT ms | p99 TTFT ms | cost $/1k req | errors | local | hedged |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.shape} | {r.policy} | {r.p50_ms:.0f} | {r.p99_ms:.0f} | "
            f"{r.cost_per_1k:.4f} | {r.error_rate:.1%} | {r.local_share:.0%} | "
            f"{r.hedged_share:.1%} |"
        )
    return "\n".join(lines)


def verdicts(rows: list[Row]) -> str:
    """Per shape: the recommended policy against round robin, and against the issue's goal."""
    by_key = {(r.shape, r.policy): r for r in rows}
    lines = [
        f"| shape | p99 TTFT: round_robin / {RECOMMENDED} | cost: {RECOMMENDED} / round_robin "
        f"| {RECOMMENDED} errors | {RECOMMENDED} local | round_robin local |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for shape in dict.fromkeys(r.shape for r in rows):
        rec, rr = by_key.get((shape, RECOMMENDED)), by_key.get((shape, "round_robin"))
        if rec is None or rr is None:
            continue
        lines.append(
            f"| {shape} | {rr.p99_ms / rec.p99_ms:.1f}x | {rec.cost_per_1k / rr.cost_per_1k:.2f} "
            f"| {rec.error_rate:.2%} | {rec.local_share:.0%} | {rr.local_share:.0%} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--shapes", default=",".join(SHAPES))
    parser.add_argument("--policies", default=",".join(POLICIES))
    parser.add_argument("--requests", type=int, default=600, help="per shape and policy")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=Path("bench/results/routing_study"))
    args = parser.parse_args()
    shapes = [s for s in args.shapes.split(",") if s]
    policies = [p for p in args.policies.split(",") if p]
    for names, known, what in ((shapes, SHAPES, "shapes"), (policies, POLICIES, "policies")):
        unknown = [n for n in names if n not in known]
        if unknown:
            parser.error(f"unknown {what} {unknown}; known: {', '.join(known)}")
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"{args.requests} requests per shape and policy, seed {args.seed}", flush=True)
    results: dict[tuple[str, str], Result] = {}
    rows: list[Row] = []
    for shape in shapes:
        for policy in policies:
            result = run(policy, shape, args.requests, args.seed)
            results[(shape, policy)] = result
            rows.append(Row.of(shape, policy, result))
            print(table(rows[-1:]).splitlines()[-1], f"({result.seconds:.0f} s)", flush=True)
    report = (
        f"{args.requests} requests per shape and policy, seed {args.seed}\n\n"
        f"{table(rows)}\n\n{verdicts(rows)}\n"
    )
    print()
    print(report)
    (args.out / "results.md").write_text(report)
    # Rows and raw samples, for bench/routing_study_plots.py (run in a venv of its own: see
    # `make study`).
    raw = {
        f"{shape}/{policy}": {
            "ttft_ms": [round(t, 1) for t in r.ttft_ms],
            "served": [(round(t, 2), local) for t, local in r.served],
            "by_request": r.by_request,
        }
        for (shape, policy), r in results.items()
    }
    (args.out / "results.json").write_text(
        json.dumps({"recommended": RECOMMENDED, "rows": [asdict(r) for r in rows], "raw": raw})
    )


if __name__ == "__main__":
    main()
