"""Keeps the gateway's key cache in step with the key table, so revocations apply in < 1 s.

Each poll is one cheap fingerprint query (row count and sum of revisions); the active keys are
read only when it changed. A failed poll keeps the last known keys and tries again next tick.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from hybridinference.gateway.auth import KeyCache
from hybridinference.keys.store import KeyStore, KeyStoreError

log = logging.getLogger(__name__)
# At most one warning per this many seconds while the key store is unreachable.
_WARN_EVERY_S = 30.0


class KeyRefresher:
    def __init__(self, store: KeyStore, cache: KeyCache, interval_s: float) -> None:
        self._store = store
        self._cache = cache
        self._interval_s = interval_s
        self._fingerprint: tuple[int, int] | None = None
        self._task: asyncio.Task[None] | None = None
        self._last_warning = 0.0

    async def load(self) -> None:
        """The first load; raises KeyStoreError so a gateway never serves without its keys."""
        fingerprint = await self._store.fingerprint()
        self._cache.replace(await self._store.active_keys())
        self._fingerprint = fingerprint
        log.info("api keys loaded", extra={"active_keys": len(self._cache)})

    async def refresh_once(self) -> bool:
        """Reloads when the table changed; True if it did."""
        fingerprint = await self._store.fingerprint()
        if fingerprint == self._fingerprint:
            return False
        self._cache.replace(await self._store.active_keys())
        self._fingerprint = fingerprint
        log.info("api keys reloaded", extra={"active_keys": len(self._cache)})
        return True

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="key-refresh")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._store.close()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            try:
                await self.refresh_once()
            except KeyStoreError as error:
                now = time.monotonic()
                if now - self._last_warning > _WARN_EVERY_S:
                    self._last_warning = now
                    log.warning("key store unreachable; keeping the last known keys: %s", error)
            except Exception:
                log.exception("key refresh failed")
