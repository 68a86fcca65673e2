"""Headless Chromium from Debian's package, driven by Playwright (no browser download).

The Playwright package brings only its driver; the browser is /usr/bin/chromium (`apt-get
install chromium`, in .ci/run). Every page records what the browser reports as an error (console
errors, uncaught exceptions, failed requests), so a test can assert there were none.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from playwright.sync_api import Browser, ConsoleMessage, Page, sync_playwright

from support.procs import REPO

CHROMIUM = os.environ.get("HI_CHROMIUM", "/usr/bin/chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# Screenshots and other test artefacts (var/ is git-ignored); CI can collect them from here.
ARTEFACTS = Path(os.environ.get("HI_TEST_ARTEFACTS", str(REPO / "var" / "test-artefacts")))


@dataclass
class WatchedPage:
    page: Page
    errors: list[str] = field(default_factory=list)

    def screenshot(self, name: str) -> Path:
        target = ARTEFACTS / "console" / f"{name}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(target), full_page=True)
        return target


def _watch(page: Page) -> WatchedPage:
    watched = WatchedPage(page)

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            watched.errors.append(f"console: {message.text}")

    page.on("console", on_console)
    page.on("pageerror", lambda error: watched.errors.append(f"uncaught: {error}"))
    return watched


@contextmanager
def chromium() -> Iterator[Browser]:
    if shutil.which(CHROMIUM) is None:
        raise RuntimeError(f"{CHROMIUM} not found: apt-get install chromium (see .ci/run)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            yield browser
        finally:
            browser.close()


@contextmanager
def new_page(browser: Browser, width: int = 1280, height: int = 900) -> Iterator[WatchedPage]:
    """A page in a context of its own (its own session storage)."""
    context = browser.new_context(viewport={"width": width, "height": height})
    try:
        yield _watch(context.new_page())
    finally:
        context.close()
