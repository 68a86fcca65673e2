"""Config hot reload: on SIGHUP, or when the config file changes (polled), the router re-reads the
mesh config and swaps in a new endpoint table and strategies.

Streams in flight keep the endpoint objects they hold, so nothing is dropped; endpoints and
worker channels that survive the reload keep their live state (counters, EWMAs, breakers).
An invalid new config is rejected with one clear log line and the running one stays.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Callable

from hybridinference.common.settings import CONFIG_ENV, ConfigError, MeshSettings, load_settings
from hybridinference.router.endpoints import Connect, EndpointTable, Worker, connect_worker
from hybridinference.router.health import HealthMonitor
from hybridinference.router.relay import Relay
from hybridinference.router.strategies import Strategy, create_strategy

log = logging.getLogger(__name__)

# How long streams on a channel the new config dropped may go on before they are cancelled.
DRAIN_GRACE_S = 600.0


def build_strategies(table: EndpointTable) -> dict[str, Strategy]:
    # One strategy instance per model: its state (e.g. the rotation) belongs to that model.
    return {name: create_strategy(m.strategy, m.options) for name, m in table.models.items()}


class ConfigReloader:
    def __init__(
        self,
        relay: Relay,
        health: HealthMonitor,
        poll_interval_s: float,
        path: str | None = None,
        connect: Connect = connect_worker,
        load: Callable[[str | None], MeshSettings] = load_settings,
    ) -> None:
        self._relay = relay
        self._health = health
        self._poll_interval_s = poll_interval_s
        # The file the process was started with (load_settings records it in the environment).
        self._path = path if path is not None else os.environ.get(CONFIG_ENV)
        self._connect = connect
        self._load = load
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._draining: set[asyncio.Task[None]] = set()
        self._signature = self._file_signature()
        self.rejected_total = 0

    async def start(self) -> None:
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self._wake.set)
        self._task = asyncio.create_task(self._run(), name="router-config-reload")

    async def stop(self) -> None:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
        for task in [self._task, *self._draining]:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._task = None

    async def _run(self) -> None:
        timeout = self._poll_interval_s if self._poll_interval_s > 0 and self._path else None
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
            signalled = self._wake.is_set()
            self._wake.clear()
            signature = self._file_signature()
            if signalled or signature != self._signature:
                self._signature = signature
                try:
                    self.reload()
                except Exception:  # a bug in one reload must not end reloading for good
                    log.exception("config reload failed; keeping the running config")

    def _file_signature(self) -> tuple[int, int] | None:
        if not self._path:
            return None
        try:
            stat = os.stat(self._path)
        except OSError:
            return None
        return stat.st_mtime_ns, stat.st_size

    def reload(self) -> bool:
        """Loads the config and switches to it; False (and the old config stays) if invalid."""
        try:
            settings = self._load(self._path)
        except ConfigError as error:
            self.rejected_total += 1
            log.error(
                "config reload rejected; keeping the running config",
                extra={"path": self._path, "error": str(error)},
            )
            return False
        previous = self._relay.table
        table = EndpointTable.from_settings(settings, self._connect, previous=previous)
        self._relay.replace(table, build_strategies(table))
        self._health.replace_table(table)
        for worker in table.channels_dropped_since(previous):
            task = asyncio.create_task(self._close_when_idle(worker))
            self._draining.add(task)
            task.add_done_callback(self._draining.discard)
        log.info(
            "config reloaded",
            extra={
                "path": self._path,
                "models": sorted(table.models),
                "endpoints": sorted(table.endpoints),
            },
        )
        return True

    async def _close_when_idle(self, worker: Worker) -> None:
        """Closes a worker channel the new config dropped, once its streams have finished
        (grpc.aio lets calls on a closing channel finish within the grace period)."""
        if worker.channel is not None:
            await worker.channel.close(grace=DRAIN_GRACE_S)
