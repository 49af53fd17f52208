"""The web chat at / in headless Chromium, against a real server on 127.0.0.1."""

import os

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial import unittest

from imd.channels.longconn import msgtypes as T
from imd.channels.longconn.client import connect
from tests.browser import Browser, screenshot_dir, skip_reason
from tests.support import LongConnTestMixin, SQLiteBackend

SKIP = skip_reason()


def send(page, text):
    page.fill("#text", text)
    page.press("#text", "Enter")


def message(page, text):
    return page.locator("#messages li", has_text=text)


def conversation(page, key):
    return page.locator(f"#conversations li[data-key='{key}']")


class WebChatTests(LongConnTestMixin, SQLiteBackend, unittest.TestCase):
    if SKIP:
        skip = SKIP

    @inlineCallbacks
    def setUp(self):
        self.server = self.start_server()
        for uid in ("alice", "bob"):
            yield self.server.accounts.register(uid, "secret1")
        host, port = self.server.address("http")
        self.browser = Browser(f"http://{host}:{port}")

    def websocket_sessions(self, uid):
        return [s for s in self.server.hub.sessions(uid) if s.channel == "websocket"]

    def test_two_users_chat_with_receipts_and_recall(self):
        def steps(b):
            alice = b.login("alice", "secret1")
            bob = b.login("bob", "secret1")
            for page in (alice, bob):
                page.wait_for_selector("#status.online")
            alice.fill("#open-chat input", "bob")
            alice.press("#open-chat input", "Enter")
            send(alice, "hello bob")
            # Bob's list shows the conversation with one unread message.
            conversation(bob, "u:alice").locator(".badge", has_text="1").wait_for()
            conversation(bob, "u:alice").click()
            message(bob, "hello bob").wait_for()
            self.assertEqual(conversation(bob, "u:alice").locator(".badge").inner_text(), "")
            # Alice's message went through: acknowledged, delivered, then read.
            message(alice, "hello bob").locator(".meta", has_text="read").wait_for()
            send(bob, "hi alice")
            message(alice, "hi alice").wait_for()
            send(alice, "oops, wrong window")
            message(bob, "oops, wrong window").wait_for()
            message(alice, "oops, wrong window").locator("button.recall").click()
            bob.locator("#messages li.recalled", has_text="message recalled").wait_for()
            self.assertEqual(message(bob, "oops, wrong window").count(), 0)
            # A file, uploaded with progress, reaches Bob as a link he can fetch.
            alice.set_input_files("#file", files=[{"name": "notes.txt", "mimeType": "text/plain", "buffer": b"abc" * 1000}])
            link = bob.locator("#messages li a", has_text="notes.txt")
            link.wait_for()
            self.assertTrue(alice.locator("#progress").is_hidden())
            body = bob.evaluate("(href) => fetch(href).then(r => r.text())", link.get_attribute("href"))
            self.assertEqual(body, "abc" * 1000)
            folder = screenshot_dir()
            if folder:
                send(bob, "the file is here, thanks!")
                message(alice, "thanks!").wait_for()
                alice.screenshot(path=os.path.join(folder, "web-chat.png"))

        return self.browser.run(steps)

    def test_offline_user_gets_messages_on_return_and_reconnects_without_loss(self):
        def steps(b):
            bob = b.login("bob", "secret1")
            bob.wait_for_selector("#status.online")
            bob.context.close()
            alice = b.login("alice", "secret1")
            alice.wait_for_selector("#status.online")
            alice.fill("#open-chat input", "bob")
            alice.press("#open-chat input", "Enter")
            send(alice, "while you were away")
            send(alice, "and another")
            message(alice, "and another").locator(".meta", has_text="✓").wait_for()
            bob = b.login("bob", "secret1")
            conversation(bob, "u:alice").locator(".badge", has_text="2").wait_for()
            conversation(bob, "u:alice").click()
            message(bob, "while you were away").wait_for()
            message(bob, "and another").wait_for()
            # The connection drops: the page reconnects and misses nothing.
            [session] = b.call(self.websocket_sessions, "bob")
            b.call(lambda: session.protocol.tcp.abortConnection())
            bob.wait_for_selector("#status:not(.online)")
            send(alice, "sent while bob reconnects")
            bob.wait_for_selector("#status.online")
            message(bob, "sent while bob reconnects").wait_for()
            # Typed while offline, sent on reconnecting.
            [session] = b.call(self.websocket_sessions, "bob")
            b.call(lambda: session.protocol.tcp.abortConnection())
            bob.wait_for_selector("#status:not(.online)")
            send(bob, "typed offline")
            message(alice, "typed offline").wait_for()
            self.assertEqual(message(bob, "while you were away").count(), 1)

        return self.browser.run(steps)

    def test_long_connection_client_and_browser_chat(self):
        host, port = self.server.address("longconn")

        def steps(b):
            page = b.login("alice", "secret1")
            page.wait_for_selector("#status.online")
            tcp = b.call(connect, reactor, host, port)
            self.addCleanup(tcp.close)
            b.call(tcp.auth, "bob", password="secret1")
            b.call(tcp.send_message, "alice", "from a seed-001 client")
            conversation(page, "u:bob").click()
            message(page, "from a seed-001 client").wait_for()
            send(page, "from the browser")
            _, body = b.call(tcp.expect, T.IM_MESSAGE, lambda body: body["body"] == "from the browser")
            self.assertEqual(body["from"], "alice")
            # The browser said it read the TCP client's message.
            _, receipt = b.call(tcp.expect, T.IM_NOTIFY_RECEIPT, lambda body: body["kind"] == "read")
            self.assertEqual(receipt["from"], "alice")

        return self.browser.run(steps)

    def test_a_user_is_found_by_telephone(self):
        d = self.server.accounts.register("88ade65ac2fe662002bec20902dd47e3", "secret1", telephone="13244556677")

        def steps(b):
            alice = b.login("alice", "secret1")
            alice.wait_for_selector("#status.online")
            alice.fill("#open-chat input", "1324455667")
            alice.press("#open-chat input", "Enter")
            alice.locator("#find-error", has_text="nobody has").wait_for()
            alice.fill("#open-chat input", "13244556677")
            alice.press("#open-chat input", "Enter")
            send(alice, "found you")
            message(alice, "found you").locator(".meta", has_text="✓").wait_for()
            self.assertEqual(alice.locator("#find-error").inner_text(), "")

        d.addCallback(lambda _: self.browser.run(steps))
        d.addCallback(lambda _: self.server.store.messages.offline("88ade65ac2fe662002bec20902dd47e3"))
        d.addCallback(lambda waiting: self.assertEqual([(m.sender, m.body) for m in waiting], [("alice", "found you")]))
        return d

    def test_friend_request_presence_and_group(self):
        def steps(b):
            alice = b.login("alice", "secret1")
            bob = b.login("bob", "secret1")
            for page in (alice, bob):
                page.wait_for_selector("#status.online")
            alice.fill("#add-friend input", "bob")
            alice.press("#add-friend input", "Enter")
            bob.locator("#requests button", has_text="Accept").click()
            # Friends now: each sees the other online.
            conversation(alice, "u:bob").locator(".dot.online").wait_for()
            conversation(bob, "u:alice").locator(".dot.online").wait_for()
            alice.fill("#new-group input", "team")
            alice.press("#new-group input", "Enter")
            alice.fill("#invite input", "bob")
            alice.press("#invite input", "Enter")
            bob.locator("#requests button", has_text="Join").click()
            bob.locator("#conversations li", has_text="team").click()
            send(bob, "hello team")
            message(alice, "hello team").wait_for()

        return self.browser.run(steps)

    def test_wrong_password_is_shown(self):
        def steps(b):
            page = b.login("alice", "wrong!!")
            page.locator("#login-error", has_text="password").wait_for()

        return self.browser.run(steps)
