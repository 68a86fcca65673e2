"""CPU time and peak memory of processes, read from /proc (Linux), for per-process accounting.

CPU is utime + stime in clock ticks turned into seconds; peak RSS is the kernel's high-water mark
(``VmHWM``), so it covers spikes between samples.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

_TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Proc:
    pid: int
    name: str


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (0 when it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    # The command name is in parentheses and may contain spaces: split after the last ")".
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) * _TICK_S


def peak_rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def children(pid: int) -> list[int]:
    """Direct children of a process (every thread's list)."""
    found: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return found
    for task in tasks:
        try:
            found += [int(child) for child in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def mesh_name(argv: list[str]) -> str:
    """A readable name for a mesh child from its command line."""
    if argv and argv[0].endswith("envoy"):
        return "envoy"
    if "-m" in argv:
        module = argv[argv.index("-m") + 1]
        name = module.removeprefix("hybridinference.")
        if name == "providers" and "--worker" in argv:
            return f"provider:{argv[argv.index('--worker') + 1]}"
        return name
    return os.path.basename(argv[0]) if argv else "?"


def mesh_processes(launcher_pid: int) -> list[Proc]:
    """The launcher and every process it started, named by role."""
    procs = [Proc(launcher_pid, "launcher")]
    procs += [Proc(pid, mesh_name(cmdline(pid))) for pid in children(launcher_pid)]
    return procs


class CpuMeter:
    """CPU seconds each process spent between ``start()`` and ``stop()``."""

    def __init__(self, procs: list[Proc]) -> None:
        self._procs = procs
        self._before: dict[int, float] = {}

    def start(self) -> None:
        self._before = {proc.pid: cpu_s(proc.pid) for proc in self._procs}

    def stop(self) -> dict[str, float]:
        return {
            proc.name: cpu_s(proc.pid) - self._before.get(proc.pid, 0.0) for proc in self._procs
        }
