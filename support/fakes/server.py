"""Runs an aiohttp app on a loopback port in a background thread, for sync and async tests alike.

A thread (not the test's loop) so the fake keeps serving while a test blocks, and so a provider
worker in another process can reach it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import Self

from aiohttp import web


class ThreadedServer:
    def __init__(self, make_app: Callable[[], web.Application]) -> None:
        self._make_app = make_app
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ThreadedServer:
        self._thread.start()
        self.port = self.call(self._start()).result(timeout=10)
        return self

    async def _start(self) -> int:
        # handler_cancellation: a client that goes away cancels the handler, as in production
        # servers, so the fake can count disconnects exactly.
        self._runner = web.AppRunner(self._make_app(), handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        return int(server.sockets[0].getsockname()[1])  # type: ignore[attr-defined]

    def call(self, coro: object) -> Future[int]:
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def stop(self) -> None:
        if self._runner is not None:
            self.call(self._runner.cleanup()).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        if not self._thread.is_alive():
            # A stopped loop still owns its selector and self-pipe until closed.
            self._loop.close()


class FakeApi:
    """A fake upstream API served by a ThreadedServer: what every fake shares (start, stop, a
    fixture helper); each fake builds its own routes in ``_app``."""

    def __init__(self) -> None:
        self._server = ThreadedServer(self._app)

    @property
    def server_url(self) -> str:
        return self._server.url

    @classmethod
    def running(cls) -> Iterator[Self]:
        """A started fake, stopped when the generator closes (``yield from`` it in a fixture)."""
        fake = cls().start()
        try:
            yield fake
        finally:
            fake.stop()

    def start(self) -> Self:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def _app(self) -> web.Application:
        raise NotImplementedError
