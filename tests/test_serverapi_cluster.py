"""
The server API on two instances linked by a real Redis: a Nonce used on
one is refused on the other, and blocking a user on one ends its session
on the other.
"""

from __future__ import annotations

import secrets

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial import unittest

from imd.channels.longconn import msgtypes as T
from imd.channels.longconn.client import connect
from imd.channels.serverapi.client import ServerApiClient
from tests.support import REDIS_URL, PostgresBackend, SQLiteBackend, make_config, start_server
from tests.test_cluster import _subscribed, eventually

KEY, SECRET = "clusterkey", "clustersecret"


class ServerApiClusterMixin:
    if REDIS_URL is None:
        skip = "IMD_TEST_REDIS_URL is not set"

    def setUp(self):
        url = self.database_url()
        prefix = f"imdtest{secrets.token_hex(4)}"
        self.servers = [
            start_server(self, make_config(
                url,
                longconn={"endpoint": "tcp:0:interface=127.0.0.1"},
                redis={"url": REDIS_URL, "prefix": prefix, "heartbeat": 1},
                instance={"id": f"node{i}"},
                serverapi={"app_key": KEY, "app_secret": SECRET},
            ))
            for i in range(2)
        ]
        self.clients = []
        for server in self.servers:
            host, port = server.address("http")
            self.clients.append(ServerApiClient(f"http://{host}:{port}", KEY, SECRET))
        return eventually(lambda: all(s.hub.healthy for s in self.servers))

    @inlineCallbacks
    def test_a_nonce_is_used_once_in_the_cluster(self):
        a, b = self.clients
        headers = a.headers(nonce=secrets.token_hex(8))
        code, reply = yield a.call("user/create", {"accid": "u1"}, headers=headers)
        self.assertEqual(reply["code"], 200, reply)
        code, reply = yield b.call("user/create", {"accid": "u2"}, headers=headers)
        self.assertEqual(reply["code"], 431, reply)
        self.assertIsNone((yield self.servers[1].accounts.get_user("u2")))

    @inlineCallbacks
    def test_blocking_on_one_instance_ends_a_session_on_the_other(self):
        a, b = self.clients
        code, reply = yield a.call("user/create", {"accid": "u1"})
        token = reply["info"]["token"]
        host, port = self.servers[1].address("longconn")
        client = yield connect(reactor, host, port)
        self.addCleanup(client.close)
        yield client.auth("u1", token=token)
        yield eventually(lambda: _subscribed(self.servers[1], "u1"))
        code, reply = yield a.call("user/block", {"accid": "u1"})
        self.assertEqual(reply["code"], 200, reply)
        _, kick = yield client.expect(T.IM_KICK)
        self.assertEqual(kick["reason"], "account disabled")


class SQLiteServerApiClusterTests(ServerApiClusterMixin, SQLiteBackend, unittest.TestCase):
    pass


class PostgresServerApiClusterTests(ServerApiClusterMixin, PostgresBackend, unittest.TestCase):
    pass
