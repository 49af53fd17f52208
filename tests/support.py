"""
What the tests share: databases on each backend, a config for a server on
loopback port 0, a started server, and an HTTP client for it.

Every store-backed test runs on SQLite and, when C{IMD_TEST_POSTGRES_URL}
is set, on Postgres: write the tests once in a mixin and combine it with
L{SQLiteBackend} and L{PostgresBackend}.
"""

from __future__ import annotations

import itertools
import json
import os
from typing import Any

import treq
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks, returnValue
from twisted.trial import unittest

from imd.config import Config
from imd.server import Server
from imd.bench.server import free_ports
from imd.store.scratch import scratch_schema

POSTGRES_URL = os.environ.get("IMD_TEST_POSTGRES_URL") or None
REDIS_URL = os.environ.get("IMD_TEST_REDIS_URL") or None
_schemas = itertools.count()


def sqlite_url(testcase: unittest.TestCase) -> str:
    directory = os.path.abspath(testcase.mktemp())
    os.makedirs(directory)
    return f"sqlite:///{directory}/imd.sqlite3"


def postgres_url(testcase: unittest.TestCase) -> str:
    """A URL whose search_path is a new, empty schema, dropped after the test."""
    url, drop = scratch_schema(POSTGRES_URL, f"imd_test_{os.getpid()}_{next(_schemas)}")
    testcase.addCleanup(drop)
    return url


class SQLiteBackend:
    backend = "sqlite"

    def database_url(self) -> str:
        return sqlite_url(self)


class PostgresBackend:
    backend = "postgresql"
    if POSTGRES_URL is None:
        skip = "IMD_TEST_POSTGRES_URL is not set"

    def database_url(self) -> str:
        return postgres_url(self)


def _merge(base: dict, overrides: dict) -> dict:
    merged = {section: dict(keys) for section, keys in base.items()}
    for section, keys in overrides.items():
        merged.setdefault(section, {}).update(keys)
    return merged


def make_config(database_url: str, **sections: dict) -> Config:
    """
    A config for a test server: loopback port 0, cheap password hashing,
    no store process (its start costs half a second of CPU, for each of
    hundreds of servers; tests.test_store_process runs servers with one).
    """
    base = {
        "http": {"endpoint": "tcp:0:interface=127.0.0.1"},
        "longconn": {"endpoint": ""},
        "socket": {"endpoint": ""},
        "xmpp": {"endpoint": ""},
        "database": {"url": database_url, "store_process": "off"},
        "auth": {"hash_time_cost": 1, "hash_memory_kib": 1024},
    }
    return Config.from_dict(_merge(base, sections))


def start_server(testcase: unittest.TestCase, config: Config) -> Server:
    """Start a whole server on the global reactor; stopped after the test."""
    server = Server(config, reactor)
    service = server.make_service()
    service.privilegedStartService()
    service.startService()
    testcase.addCleanup(service.stopService)
    return server


class ServerTestMixin:
    """For a TestCase that also mixes in a backend."""

    def start_server(self, **sections: dict) -> Server:
        return start_server(self, make_config(self.database_url(), **sections))

    @inlineCallbacks
    def http(
        self,
        server: Server,
        method: str,
        path: str,
        body: Any = None,
        token: str | None = None,
        raw: bytes | None = None,
        headers: dict | None = None,
    ):
        """
        One request to C{server}'s HTTP listener over a real socket:
        (status, decoded JSON or the raw bytes, response).
        """
        host, port = server.address("http")
        all_headers = {b"Content-Type": [b"application/json"]}
        if token is not None:
            all_headers[b"Authorization"] = [b"Bearer " + token.encode()]
        for k, v in (headers or {}).items():
            all_headers[k.encode() if isinstance(k, str) else k] = [v.encode() if isinstance(v, str) else v]
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        response = yield treq.request(
            method,
            f"http://{host}:{port}{path}",
            data=data,
            headers=all_headers,
            persistent=False,
        )
        content = yield response.content()
        try:
            decoded = json.loads(content)
        except ValueError:
            decoded = content
        returnValue((response.code, decoded, response))

    @inlineCallbacks
    def login(self, server: Server, uid: str, password: str) -> str:
        code, body, _ = yield self.http(server, "POST", "/auth/login", {"uid": uid, "password": password})
        self.assertEqual(code, 200, body)
        returnValue(body["token"])


def repo_root() -> str:
    """The source tree: what a child process needs on PYTHONPATH to import imd."""
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def child_env(**variables: str) -> dict:
    """
    The environment for an imd child process: ours without any IMD_
    variable (a developer's own settings must not leak into a test), the
    source tree on PYTHONPATH, cheap password hashing, and C{variables}.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMD_")}
    env["PYTHONPATH"] = repo_root()
    env["IMD_AUTH_HASH_TIME_COST"] = "1"
    env["IMD_AUTH_HASH_MEMORY_KIB"] = "1024"
    env.update(variables)
    return env


def free_port() -> int:
    """
    A loopback TCP port nothing listens on right now, for a child process
    that cannot report the port 0 gave it.
    """
    return free_ports(1)[0]


class LongConnTestMixin(ServerTestMixin):
    """Servers with the long connection on, and clients of it."""

    def start_server(self, **sections: dict) -> Server:
        sections.setdefault("longconn", {"endpoint": "tcp:0:interface=127.0.0.1"})
        return ServerTestMixin.start_server(self, **sections)

    @inlineCallbacks
    def connect(self, server: Server):
        from imd.channels.longconn.client import connect

        host, port = server.address("longconn")
        client = yield connect(reactor, host, port)
        self.addCleanup(client.close)
        returnValue(client)

    @inlineCallbacks
    def user(self, server: Server, uid: str, password: str = "secret1", res: str = "default", register: bool = True):
        """A registered, authenticated client of C{uid}."""
        if register:
            yield server.accounts.register(uid, password)
        client = yield self.connect(server)
        yield client.auth(uid, password=password, res=res)
        returnValue(client)
