"""Time to first token and inter-token gaps of SSE chat streams, seen by an HTTP client.

One stream at a time (concurrency 1), so the client's own cost does not queue behind itself. A
token's time is when the network read carrying its frame returned.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import aiohttp

_CONTENT = b'"content":"'


@dataclass(frozen=True)
class StreamTimes:
    ttft_ms: float
    # Mean gap between consecutive content tokens after the first.
    itl_ms: float
    total_ms: float
    tokens: int


@dataclass(frozen=True)
class StreamSummary:
    ttft_p50_ms: float
    ttft_p99_ms: float
    itl_p50_ms: float
    total_p50_ms: float
    streams: int


def _tokens_in(data: bytes) -> int:
    # Non-empty content deltas (the role chunk carries "content":"" and does not count).
    return data.count(_CONTENT) - data.count(_CONTENT + b'"')


async def one(session: aiohttp.ClientSession, url: str, body: bytes) -> StreamTimes:
    started = time.perf_counter()
    first = last = 0.0
    tokens = 0
    async with session.post(url, data=body, headers={"content-type": "application/json"}) as rsp:
        if rsp.status != 200:
            raise RuntimeError(f"stream answered {rsp.status}: {await rsp.text()}")
        async for data in rsp.content.iter_any():
            now = time.perf_counter()
            count = _tokens_in(data)
            if count:
                if not tokens:
                    first = now
                last = now
                tokens += count
    ended = time.perf_counter()
    itl = (last - first) / (tokens - 1) if tokens > 1 else 0.0
    return StreamTimes((first - started) * 1000, itl * 1000, (ended - started) * 1000, tokens)


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def measure(url: str, body: bytes, streams: int, warmup: int = 5) -> StreamSummary:
    async with aiohttp.ClientSession() as session:
        for _ in range(warmup):
            await one(session, url, body)
        times = [await one(session, url, body) for _ in range(streams)]
    ttfts = [t.ttft_ms for t in times]
    return StreamSummary(
        ttft_p50_ms=statistics.median(ttfts),
        ttft_p99_ms=_p(ttfts, 0.99),
        itl_p50_ms=statistics.median(t.itl_ms for t in times),
        total_p50_ms=statistics.median(t.total_ms for t in times),
        streams=len(times),
    )
