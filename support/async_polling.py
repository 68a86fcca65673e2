"""Polling for async tests: wait for a condition with a deadline instead of sleeping."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


async def until(
    probe: Callable[[], bool | Awaitable[bool]], timeout_s: float, what: str, every_s: float = 0.02
) -> None:
    """Awaits until ``probe`` (plain or async) is true; fails after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = probe()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(every_s)
