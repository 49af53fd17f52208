"""
Headless Chromium for the web tests, driven by Playwright's sync API in a
thread of its own while the server under test runs in trial's reactor.

A test writes its browser steps as one function of a L{Browser}; it
reaches the reactor (the server, a TCP client) with L{Browser.call}.
Tests skip, saying why, where Chromium or Playwright is missing.
"""

from __future__ import annotations

import os
import shutil
from typing import Any, Callable

from twisted.internet import reactor
from twisted.internet.threads import blockingCallFromThread, deferToThread

CHROMIUM = os.environ.get("IMD_TEST_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
# Without these, Chromium as root waits on a network this machine does not have.
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
TIMEOUT_MS = 10_000


def skip_reason() -> str | None:
    """Why browser tests cannot run here; None when they can."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright is not installed (pip install -e '.[test]')"
    if not os.access(CHROMIUM, os.X_OK):
        return f"no Chromium at {CHROMIUM} (apt-get install chromium chromium-driver)"
    return None


def screenshot_dir() -> str | None:
    """Where screenshots for the docs go (IMD_SCREENSHOTS), if anywhere."""
    return os.environ.get("IMD_SCREENSHOTS") or None


class Browser:
    """One Chromium for one test; each user a context of its own."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url

    def call(self, f: Callable, *args: Any, **kwargs: Any) -> Any:
        """Run C{f} in the reactor and wait for its result (a Deferred's too)."""
        return blockingCallFromThread(reactor, f, *args, **kwargs)

    def page(self, path: str = "/") -> Any:
        context = self._browser.new_context(viewport={"width": 1000, "height": 640})
        context.set_default_timeout(TIMEOUT_MS)
        page = context.new_page()
        page.goto(self.base_url + path)
        return page

    def login(self, uid: str, password: str, path: str = "/") -> Any:
        page = self.page(path)
        page.fill("input[name=uid]", uid)
        page.fill("input[name=password]", password)
        page.click("button[type=submit]")
        return page

    def run(self, steps: Callable[["Browser"], Any]) -> Any:
        """Deferred: C{steps(self)} in a thread with a browser open."""

        def in_thread() -> Any:
            from playwright.sync_api import sync_playwright

            # Playwright gives each launch a fresh profile of its own.
            with sync_playwright() as p:
                self._browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
                try:
                    return steps(self)
                finally:
                    self._browser.close()

        return deferToThread(in_thread)
