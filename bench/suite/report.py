"""The human summary of a benchmark result: one table of the headline figures, then per process."""

from __future__ import annotations

from typing import Any

# (key, label, unit, must, aim, lower_is_better)
_HEADLINE: list[tuple[str, str, str, float | None, float | None, bool]] = [
    ("added_latency_p50_ms_c1", "added latency p50, c=1", "ms", 2.5, 1.5, True),
    ("added_latency_p99_ms_c1", "added latency p99, c=1", "ms", None, None, True),
    ("added_latency_p50_ms_c32", "added latency p50, c=32", "ms", None, None, True),
    ("added_latency_p99_ms_c32", "added latency p99, c=32", "ms", None, None, True),
    ("rps_nonstream", "non-streaming req/s (saturation)", "/s", 800, 1200, False),
    ("rps_stream", "20-chunk streams/s (saturation)", "/s", 330, 500, False),
    ("cpu_ms_per_request", "mesh CPU per non-streaming request", "ms", 2.5, 1.2, True),
    ("cpu_ms_per_stream", "mesh CPU per 20-chunk stream", "ms", None, None, True),
    ("ttft_overhead_p50_ms", "TTFT overhead p50, c=1", "ms", None, None, True),
    ("itl_overhead_p50_ms", "inter-token overhead p50, c=1", "ms", None, None, True),
    ("grpc_added_latency_p50_ms_c1", "typed gRPC Chat added p50, c=1", "ms", None, None, True),
    ("grpc_rps_nonstream", "typed gRPC Chat req/s (Python client)", "/s", None, None, False),
]


def _verdict(value: float, must: float | None, aim: float | None, lower: bool) -> str:
    if must is None:
        return ""

    def ok(target: float) -> bool:
        return value <= target if lower else value >= target

    if aim is not None and ok(aim):
        return "aim met"
    return "must met" if ok(must) else "MISSED"


def table(result: dict[str, Any]) -> str:
    lines = [
        f"layout: {result.get('layout', 'separate')}",
        f"{'measure':<40} {'value':>10}  {'must':>7} {'aim':>7}  verdict",
        "-" * 78,
    ]
    for key, label, unit, must, aim, lower in _HEADLINE:
        value = result.get(key)
        if value is None:
            continue
        lines.append(
            f"{label:<40} {value:>8.2f}{unit:>2}  {must if must is not None else '':>7} "
            f"{aim if aim is not None else '':>7}  {_verdict(value, must, aim, lower)}"
        )
    lines.append("")
    lines.append(f"{'process':<16} {'CPU ms/req':>10} {'CPU ms/stream':>14} {'peak RSS MB':>12}")
    per_req = result.get("cpu_ms_per_request_by_process", {})
    per_stream = result.get("cpu_ms_per_stream_by_process", {})
    for name, rss in result.get("rss_mb", {}).items():
        lines.append(
            f"{name:<16} {per_req.get(name, 0.0):>10.3f} {per_stream.get(name, 0.0):>14.3f} "
            f"{rss:>12.1f}"
        )
    lines.append("")
    lines.append(
        f"load average before/after: {result['machine']['load_average_before']} / "
        f"{result['machine']['load_average_after']}; load generator CPU per request "
        f"(excluded): {result.get('client_cpu_ms_per_request', 0.0):.3f} ms"
    )
    return "\n".join(lines)
