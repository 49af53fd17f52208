"""The admin console at /admin/ in headless Chromium, against a real server on 127.0.0.1."""

import os

from twisted.internet.defer import inlineCallbacks
from twisted.trial import unittest

from tests.browser import Browser, screenshot_dir, skip_reason
from tests.support import LongConnTestMixin, SQLiteBackend

SKIP = skip_reason()


def row(page, section, text):
    return page.locator(f"#{section} tbody tr", has_text=text)


class ConsoleTests(LongConnTestMixin, SQLiteBackend, unittest.TestCase):
    if SKIP:
        skip = SKIP

    @inlineCallbacks
    def setUp(self):
        self.server = self.start_server()
        yield self.server.accounts.register("root", "secret1")
        yield self.server.accounts.set_admin("root", True)
        yield self.server.accounts.register("alice", "secret1")
        host, port = self.server.address("http")
        self.browser = Browser(f"http://{host}:{port}")

    def test_admin_kicks_a_chat_session_and_manages_users(self):
        def steps(b):
            chat = b.login("alice", "secret1")
            chat.wait_for_selector("#status.online")
            console = b.login("root", "secret1", path="/admin/")
            row(console, "sessions", "websocket").wait_for()
            # The cookie is out of a script's reach.
            self.assertNotIn("imd_admin", console.evaluate("document.cookie"))
            folder = screenshot_dir()
            if folder:
                # A few samples drawn first.
                console.wait_for_timeout(5000)
                console.screenshot(path=os.path.join(folder, "web-admin.png"), full_page=True)
            row(console, "sessions", "alice").locator("button", has_text="Kick").click()
            chat.locator("#status", has_text="signed out: kicked by an administrator").wait_for()
            row(console, "sessions", "alice").wait_for(state="detached")
            console.fill("#new-user input[name=uid]", "bob")
            console.fill("#new-user input[name=password]", "secret1")
            console.click("#new-user button")
            row(console, "users", "bob").wait_for()
            row(console, "users", "bob").locator("button", has_text="Disable").click()
            row(console, "users", "bob").locator("td", has_text="disabled").wait_for()
            console.fill("#new-app input", "shop")
            console.click("#new-app button")
            console.locator("#app-secret", has_text="AppSecret").wait_for()
            row(console, "apps", "shop").wait_for()

        return self.browser.run(steps)

    def test_non_admin_cannot_open_the_console(self):
        def steps(b):
            console = b.login("alice", "secret1", path="/admin/")
            console.locator("#login-error", has_text="not an administrator").wait_for()
            self.assertTrue(console.locator("#console").is_hidden())

        return self.browser.run(steps)
