"""vLLM's load, read from its Prometheus ``/metrics``: running and waiting requests, KV-cache use
and the prefix-cache hit rate.

Only the few families needed are parsed (a line scan, no Prometheus client): a vLLM server's
metrics page is tens of KB and the router asks every couple of seconds. Values are summed over
label sets (one server may serve several model names). Names differ between vLLM versions, so each
quantity lists the names it is known by, newest first.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

RUNNING = ("vllm:num_requests_running",)
WAITING = ("vllm:num_requests_waiting",)
KV_CACHE_USAGE = ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")
PREFIX_QUERIES = ("vllm:prefix_cache_queries_total", "vllm:gpu_prefix_cache_queries_total")
PREFIX_HITS = ("vllm:prefix_cache_hits_total", "vllm:gpu_prefix_cache_hits_total")
# Finished requests by reason.
REQUEST_SUCCESS = ("vllm:request_success_total",)


def parse_samples(text: str, names: Iterable[str]) -> dict[str, list[tuple[str, float]]]:
    """Samples of the wanted metric names: name → [(label text, value)]."""
    wanted = set(names)
    samples: dict[str, list[tuple[str, float]]] = {}
    for line in text.splitlines():
        if not line or line[0] == "#":
            continue
        brace = line.find("{")
        if brace >= 0:
            name = line[:brace]
            end = line.rfind("}")
            labels = line[brace + 1 : end]
            rest = line[end + 1 :].split()
        else:
            name, _, tail = line.partition(" ")
            labels = ""
            rest = tail.split()
        if name not in wanted or not rest:
            continue
        try:
            value = float(rest[0])
        except ValueError:
            continue
        samples.setdefault(name, []).append((labels, value))
    return samples


def _total(samples: dict[str, list[tuple[str, float]]], names: tuple[str, ...]) -> float | None:
    for name in names:
        if name in samples:
            return sum(value for _, value in samples[name])
    return None


@dataclass(frozen=True)
class VllmLoad:
    running: int
    waiting: int
    # In [0, 1].
    kv_cache_usage: float
    # Cumulative prefix-cache counters (tokens), for a hit rate over an interval.
    prefix_queries: float
    prefix_hits: float
    # request_success_total{finished_reason="abort"}: aborts vLLM's engine reports. Requests
    # aborted because their client went away are not counted there (vLLM 0.32): they just stop.
    aborted_total: float

    @property
    def prefix_cache_hit_rate(self) -> float:
        """Hit rate since the server started."""
        return self.prefix_hits / self.prefix_queries if self.prefix_queries else 0.0


def parse_load(text: str) -> VllmLoad:
    """The load from a metrics page; quantities the server does not report are 0."""
    families = RUNNING + WAITING + KV_CACHE_USAGE + PREFIX_QUERIES + PREFIX_HITS + REQUEST_SUCCESS
    samples = parse_samples(text, families)
    aborted = sum(
        value
        for name in REQUEST_SUCCESS
        for labels, value in samples.get(name, [])
        if 'finished_reason="abort"' in labels
    )
    return VllmLoad(
        running=int(_total(samples, RUNNING) or 0),
        waiting=int(_total(samples, WAITING) or 0),
        kv_cache_usage=min(1.0, max(0.0, _total(samples, KV_CACHE_USAGE) or 0.0)),
        prefix_queries=_total(samples, PREFIX_QUERIES) or 0.0,
        prefix_hits=_total(samples, PREFIX_HITS) or 0.0,
        aborted_total=aborted,
    )


class HitRateWindow:
    """Prefix-cache hit rate between two reads (recent behaviour, not since the server began).

    Keeps the last rate when no prefix lookups happened in between, and starts over when the
    counters go backwards (the server restarted).
    """

    def __init__(self) -> None:
        self._last: VllmLoad | None = None
        self._rate = 0.0

    def update(self, load: VllmLoad) -> float:
        last, self._last = self._last, load
        if last is None or load.prefix_queries < last.prefix_queries:
            self._rate = load.prefix_cache_hit_rate
            return self._rate
        queries = load.prefix_queries - last.prefix_queries
        if queries > 0:
            self._rate = (load.prefix_hits - last.prefix_hits) / queries
        return self._rate
