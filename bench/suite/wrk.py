"""HTTP load with wrk (C, event-driven), so the load generator is never what saturates.

One Lua script per run posts a fixed body; the run ends after ``requests`` responses or
``duration_s``, whichever comes first. wrk's own CPU time is measured (rusage of the child) so it
can be reported apart from the mesh's.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

_SCRIPT = """
wrk.method = "POST"
wrk.body = [==[%(body)s]==]
wrk.headers["Content-Type"] = "application/json"
local limit = %(per_thread)d
local count = 0
function response(status, headers, body)
  count = count + 1
  if limit > 0 and count >= limit then wrk.thread:stop() end
end
function done(summary, latency, requests)
  io.write(string.format(
    'WRKJSON {"requests":%%d,"duration_us":%%d,"status_errors":%%d,"socket_errors":%%d,' ..
    '"p50_us":%%d,"p90_us":%%d,"p99_us":%%d,"mean_us":%%.1f,"max_us":%%d}\\n',
    summary.requests, summary.duration, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean,
    latency.max))
end
"""


@dataclass(frozen=True)
class WrkResult:
    requests: int
    duration_s: float
    errors: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    # CPU seconds wrk itself used (excluded from the mesh's figures).
    client_cpu_s: float

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0


def available() -> bool:
    return shutil.which("wrk") is not None


def run(
    url: str,
    body: bytes,
    connections: int,
    requests: int,
    duration_s: float,
    threads: int = 1,
) -> WrkResult:
    """Posts ``body`` to ``url`` from ``connections`` keep-alive connections."""
    threads = max(1, min(threads, connections))
    per_thread = -(-requests // threads) if requests else 0
    script = _SCRIPT % {"body": body.decode(), "per_thread": per_thread}
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as handle:
        handle.write(script)
        path = Path(handle.name)
    argv = [
        "wrk", "-t", str(threads), "-c", str(connections), "-d", f"{max(duration_s, 1):.0f}s",
        "--timeout", "10s", "-s", str(path), url,
    ]  # fmt: skip
    try:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert proc.stdout is not None
        output = proc.stdout.read().decode(errors="replace")
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    finally:
        path.unlink(missing_ok=True)
    line = next((x for x in output.splitlines() if x.startswith("WRKJSON ")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({proc.returncode}):\n{output}")
    data = json.loads(line.removeprefix("WRKJSON "))
    return WrkResult(
        requests=int(data["requests"]),
        duration_s=data["duration_us"] / 1e6,
        errors=int(data["status_errors"]) + int(data["socket_errors"]),
        p50_ms=data["p50_us"] / 1000,
        p90_ms=data["p90_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        mean_ms=data["mean_us"] / 1000,
        client_cpu_s=usage.ru_utime + usage.ru_stime,
    )
