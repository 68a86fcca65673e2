"""Polling instead of sleeping: wait for a condition with a deadline (the one helper for tests).

``poll`` is for synchronous tests and returns the probe's first non-None result; ``until`` is for
async tests (the probe may be plain or async, and the loop keeps running between probes, which is
what lets sockets close and tasks progress). The timeout is the requirement, never a sleep.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


def poll(probe: Callable[[], T | None], timeout_s: float, what: str, every_s: float = 0.02) -> T:
    """Calls ``probe`` until it returns something other than None, or fails after the timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = probe()
        if result is not None:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(every_s)


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
