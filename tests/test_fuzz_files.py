"""Fuzzing the file server's parameters: no mutated request gets an internal error."""

from __future__ import annotations

from twisted.internet.defer import inlineCallbacks
from twisted.trial import unittest

from tests import fuzzing
from tests.support import SQLiteBackend, ServerTestMixin


class FilesFuzzTests(ServerTestMixin, SQLiteBackend, unittest.TestCase):
    @inlineCallbacks
    def test_mutated_parameters(self):
        server = self.start_server(files={"dir": self.mktemp()})
        yield server.accounts.register("alice", "secret1")
        token = yield self.login(server, "alice", "secret1")
        seeds = [
            ("/file/upload", {"token": token, "filename": "a.txt", "filesize": "5", "offset": "0", "bin": "aGVsbG8=", "signature": "X"}),
            ("/file/download", {"token": token, "filename": "a.txt", "offset": "0", "block-size": "2", "signature": "X"}),
            ("/file/download/head", {"token": token, "filename": "a.txt", "signature": "X"}),
            ("/file/check", {"token": token, "filename": "a.txt", "md5": "5d41402abc4b2a76b9719d911017c592", "signature": "X"}),
            ("/upload/mobileFileDownload", {"fileId": "1", "token": token}),
        ]
        content_types = ("application/json", "application/x-www-form-urlencoded", "text/plain", "multipart/form-data; boundary=x")
        for n, (path, raw) in enumerate(fuzzing.cases("files", seeds)):
            headers = {"Content-Type": content_types[n % len(content_types)]}
            code, body, _ = yield self.http(server, "POST", path, raw=raw, headers=headers)
            self.assertNotIn(b"internal server error", body if isinstance(body, bytes) else b"", (fuzzing.where("files"), path, raw[:200]))
        self.assertEqual(fuzzing.internal_errors(server), 0)
