"""Where each hop's CPU goes: py-spy samples every Python mesh process under load.

    .venv/bin/python -m bench.suite.profile [--seconds 10] [--stream] [--layout L] [--out DIR]

Starts the fake upstream and the mesh like the benchmark, runs wrk at concurrency 32 and, at the
same time, ``py-spy record`` (collapsed stacks, idle frames dropped) on the gateway, the router,
the provider worker and the logger. Prints per process the functions with the most samples, by
self time and inclusive, as a share of that process's samples. Needs py-spy (PyPI) and root or
ptrace permission.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import tempfile
from pathlib import Path

from bench.suite import procstats, wrk
from bench.suite.__main__ import _body
from bench.suite.mesh import FAST_MODEL, LAYOUTS, STREAM_MODEL, fake_upstream, running

PROFILED = ("gateway", "router", "provider:vllm", "logger")


def _frame_name(frame: str) -> str:
    # "function (path/to/file.py:123)" → "function (file.py)"; line numbers split one function.
    name, _, where = frame.partition(" (")
    return f"{name} ({Path(where.split(':')[0]).name})" if where else name


def summarise(collapsed: Path, top: int) -> str:
    self_counts: collections.Counter[str] = collections.Counter()
    incl_counts: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        total += count
        frames = [_frame_name(f) for f in stack.split(";")]
        self_counts[frames[-1]] += count
        for frame in set(frames):
            incl_counts[frame] += count
    if not total:
        return "  (no samples)"
    lines = [f"  {total} samples; self:"]
    lines += [f"    {n * 100 / total:5.1f}%  {f}" for f, n in self_counts.most_common(top)]
    lines.append("  inclusive:")
    lines += [f"    {n * 100 / total:5.1f}%  {f}" for f, n in incl_counts.most_common(top * 2)]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--stream", action="store_true", help="20-chunk streams instead")
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--layout", choices=LAYOUTS, default="separate")
    parser.add_argument("--out", type=Path, default=None, help="keep the collapsed stacks here")
    args = parser.parse_args()
    spy = shutil.which("py-spy") or str(Path(__file__).resolve().parents[2] / ".venv/bin/py-spy")
    model = STREAM_MODEL if args.stream else FAST_MODEL
    with tempfile.TemporaryDirectory(prefix="hi-profile-") as tmp_name:
        tmp = Path(tmp_name)
        out = args.out or tmp
        out.mkdir(parents=True, exist_ok=True)
        with (
            fake_upstream() as (upstream_url, _),
            running(tmp, upstream_url, args.layout) as mesh,
        ):
            url = f"{mesh.http_url}/v1/chat/completions"
            wrk.run(url, _body(model, args.stream), 8, 300, 3)
            procs = [p for p in procstats.mesh_processes(mesh.proc.pid) if p.name in PROFILED]
            spies = {
                p.name: subprocess.Popen(
                    [
                        spy,
                        "record",
                        "--pid",
                        str(p.pid),
                        "--format",
                        "raw",
                        "--rate",
                        "250",
                        "--duration",
                        str(int(args.seconds)),
                        "--nonblocking",
                        "--output",
                        str(out / f"{p.name.replace(':', '-')}.txt"),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                for p in procs
            }
            meter = procstats.CpuMeter(procs)
            meter.start()
            result = wrk.run(url, _body(model, args.stream), 32, 0, args.seconds)
            cpu = meter.stop()
            for spy_proc in spies.values():
                spy_proc.wait(60)
        print(f"wrk: {result.requests} requests, {result.rps:.0f}/s, p50 {result.p50_ms} ms")
        for name in spies:
            per_request = cpu[name] * 1000 / max(result.requests, 1)
            print(f"\n== {name}: {per_request:.3f} CPU ms per request")
            print(summarise(out / f"{name.replace(':', '-')}.txt", args.top))


if __name__ == "__main__":
    main()
