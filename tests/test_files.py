"""
The file service: local-disk storage, the rules, and seed 001's and seed
002's file routes over real HTTP on SQLite and Postgres, and the memory a
200 MB download costs a real server process.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import sys
from urllib.parse import urlencode

import treq
from sqlalchemy import create_engine, insert
from twisted.internet import reactor
from twisted.internet.defer import CancelledError, Deferred, DeferredList, inlineCallbacks, returnValue
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.internet.task import LoopingCall, deferLater
from twisted.internet.testing import StringTransport
from twisted.trial import unittest

from imd.channels.shared import signing
from imd.config import Config
from imd.core.files import FileService, OffsetMismatch, check_name, content_type_for, count
from imd.errors import InvalidField
from imd.files.storage import ConsumerGone, LocalStorage, MissingData, StorageError
from imd.store import schema
from tests.support import PostgresBackend, ServerTestMixin, SQLiteBackend, child_env
from tests.test_server import ProcessTestMixin

MiB = 1 << 20
SEED001_TYPE = b"application/octet-stream;charset=utf-8"


def payload(n: int, seed: int = 0) -> bytes:
    """C{n} incompressible-looking bytes, the same for the same seed."""
    out = bytearray()
    block = hashlib.sha256(str(seed).encode()).digest()
    while len(out) < n:
        block = hashlib.sha256(block).digest()
        out += block * 64
    return bytes(out[:n])


class Consumer:
    """A pull consumer that records what a producer writes."""

    def __init__(self):
        self.data = bytearray()
        self.producer = None
        self.unregistered = False

    def registerProducer(self, producer, streaming):
        assert not streaming
        self.producer = producer

    def unregisterProducer(self):
        self.unregistered = True
        self.producer = None

    def write(self, data):
        self.data += data

    def pump(self):
        while self.producer is not None:
            self.producer.resumeProducing()


class LocalStorageTests(unittest.TestCase):
    def setUp(self):
        self.storage = LocalStorage(self.mktemp(), reactor)

    @inlineCallbacks
    def test_write_finish_read(self):
        data = payload(300_000)
        yield self.storage.write("k1", 0, data[:100_000], 100_000)
        yield self.storage.write("k1", 100_000, io.BytesIO(data[100_000:]), 200_000)
        md5 = yield self.storage.finish("k1", 300_000)
        self.assertEqual(md5, hashlib.md5(data).hexdigest())
        self.assertFalse(os.path.exists(self.storage.part_path("k1")))
        producer = yield self.storage.open("k1", 1000, 250_000)
        consumer = Consumer()
        d = producer.send(consumer)
        consumer.pump()
        sent = yield d
        self.assertEqual((sent, bytes(consumer.data)), (250_000, data[1000:251_000]))
        self.assertTrue(consumer.unregistered)

    @inlineCallbacks
    def test_unacknowledged_bytes_are_cut_off(self):
        """
        A crash after a chunk reached the part file but before its count
        reached the database leaves bytes past the count: the next write
        at the count replaces them, however complete they look.
        """
        yield self.storage.write("k2", 0, b"good", 4)
        with open(self.storage.part_path("k2"), "ab") as f:
            f.write(b"half-written chunk")
        yield self.storage.write("k2", 4, b"+more", 5)
        with open(self.storage.part_path("k2"), "rb") as f:
            self.assertEqual(f.read(), b"good+more")
        # And finishing cuts whatever is past the size too.
        with open(self.storage.part_path("k2"), "ab") as f:
            f.write(b"junk")
        md5 = yield self.storage.finish("k2", 9)
        self.assertEqual(md5, hashlib.md5(b"good+more").hexdigest())
        with open(self.storage.final_path("k2"), "rb") as f:
            self.assertEqual(f.read(), b"good+more")

    @inlineCallbacks
    def test_missing_bytes(self):
        yield self.storage.write("k3", 0, b"abc", 3)
        e = yield self.assertFailure(self.storage.write("k3", 10, b"x", 1), MissingData)
        self.assertEqual((e.have, e.expected), (3, 10))
        yield self.assertFailure(self.storage.finish("k3", 4), MissingData)
        yield self.assertFailure(self.storage.open("nothing", 0, 1), MissingData)

    @inlineCallbacks
    def test_finish_is_repeatable(self):
        # A crash after the rename but before the database said complete.
        yield self.storage.write("k4", 0, b"abc", 3)
        first = yield self.storage.finish("k4", 3)
        again = yield self.storage.finish("k4", 3)
        self.assertEqual(first, again)
        empty = yield self.storage.finish("k5", 0)
        self.assertEqual(empty, hashlib.md5(b"").hexdigest())

    @inlineCallbacks
    def test_short_source(self):
        yield self.assertFailure(self.storage.write("k6", 0, io.BytesIO(b"ab"), 5), StorageError)

    def test_keys_are_not_paths(self):
        for key in ("../etc", "a/b", "", ".hidden", "x" * 65, None):
            self.assertRaises(StorageError, self.storage.part_path, key)

    @inlineCallbacks
    def test_stop_producing_closes(self):
        yield self.storage.write("k7", 0, b"x" * 200_000, 200_000)
        yield self.storage.finish("k7", 200_000)
        producer = yield self.storage.open("k7", 0, 200_000)
        consumer = Consumer()
        d = producer.send(consumer)
        producer.resumeProducing()
        producer.stopProducing()
        yield self.assertFailure(d, ConsumerGone)
        self.assertIsNone(producer._file)
        self.assertEqual(len(consumer.data), 65536)
        self.assertTrue(consumer.unregistered)

    @inlineCallbacks
    def test_cancel_closes(self):
        yield self.storage.write("k8", 0, b"x" * 200_000, 200_000)
        yield self.storage.finish("k8", 200_000)
        producer = yield self.storage.open("k8", 0, 200_000)
        consumer = Consumer()
        d = producer.send(consumer)
        d.cancel()
        yield self.assertFailure(d, CancelledError)
        self.assertIsNone(producer._file)
        producer.resumeProducing()
        self.assertEqual(len(consumer.data), 0)

    @inlineCallbacks
    def test_zero_bytes(self):
        producer = yield self.storage.open("never-written", 0, 0)
        sent = yield producer.send(StringTransport())
        self.assertEqual(sent, 0)


class RuleTests(unittest.TestCase):
    def test_names(self):
        self.assertEqual(check_name("头像 1. jpg"), "头像 1. jpg")
        self.assertEqual(check_name("x" * 255), "x" * 255)
        for bad, text in [
            ("", "filename is required"),
            (None, "filename is required"),
            (5, "filename must be a string"),
            ("x" * 256, "filename must be at most 255 characters"),
            ("a/b", "filename must not contain a path separator (/ or \\)"),
            ("a\\b", "filename must not contain a path separator (/ or \\)"),
            ("..", "filename must not contain .."),
            ("a..b", "filename must not contain .."),
            ("a\x00b", "filename must not contain NUL or other control characters"),
            ("a\nb", "filename must not contain NUL or other control characters"),
            ("a\x7fb", "filename must not contain NUL or other control characters"),
        ]:
            e = self.assertRaises(InvalidField, check_name, bad)
            self.assertEqual(e.message, text, repr(bad))

    def test_counts(self):
        self.assertEqual(count("offset", "12"), 12)
        self.assertEqual(count("offset", 12), 12)
        self.assertEqual(count("offset", None, default=0), 0)
        for bad in ("-1", -1, "1.5", "abc", " 1", True, "1" * 65, [1]):
            e = self.assertRaises(InvalidField, count, "offset", bad)
            self.assertEqual(e.message, "offset must be a non-negative integer")
        self.assertEqual(self.assertRaises(InvalidField, count, "filesize", "").message, "filesize is required")

    def test_content_types(self):
        self.assertEqual(content_type_for("image/png; charset=x"), "image/png")
        self.assertEqual(content_type_for("bogus", "a.jpg"), "image/jpeg")
        self.assertEqual(content_type_for(None, "voice.amr"), "audio/amr")
        self.assertEqual(content_type_for("text/html\r\nX: y", "noext"), "application/octet-stream")


def multipart(fields: dict, files: dict, boundary: str = "----imdTestBoundary7MA4YWxk") -> tuple[bytes, str]:
    """A multipart/form-data body: C{files} maps a field to (filename, content type, bytes)."""
    out = bytearray()
    for name, value in fields.items():
        out += f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
        out += value.encode() + b"\r\n"
    for name, (filename, ctype, data) in files.items():
        out += f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"'.encode()
        if filename is not None:
            out += f'; filename="{filename}"'.encode()
        out += b"\r\n"
        if ctype:
            out += f"Content-Type: {ctype}\r\n".encode()
        out += b"\r\n" + data + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out), f"multipart/form-data; boundary={boundary}"


class FilesTestsMixin(ServerTestMixin):
    def start(self, **files):
        config = {
            "dir": os.path.abspath(self.mktemp()),
            "max_size": 8_000_000,
            "max_chunk": MiB,
            "quota": 50_000_000,
        }
        config.update(files)
        self.files_config = config
        return self.start_server(files=config)

    @inlineCallbacks
    def setup_users(self, **files):
        server = self.start(**files)
        yield server.accounts.register("alice", "secret1")
        yield server.accounts.register("bob", "secret1")
        alice = yield self.login(server, "alice", "secret1")
        bob = yield self.login(server, "bob", "secret1")
        returnValue((server, alice, bob))

    @inlineCallbacks
    def request(self, server, method, path, params=None, sign=True, body=None, content_type=None, headers=None):
        """
        One request: C{params} signed (unless told not to) and sent as the
        query string of a GET or the form body of a POST, or C{body} as is.
        (status, body bytes, response).
        """
        host, port = server.address("http")
        params = dict(params or {})
        if sign and "signature" not in params:
            params["signature"] = signing.sign({k: v for k, v in params.items() if k != "bin"})
        url = f"http://{host}:{port}{path}"
        all_headers = {k.encode(): [v.encode()] for k, v in (headers or {}).items()}
        if body is None and method == "POST":
            body = urlencode(params).encode()
            content_type = content_type or "application/x-www-form-urlencoded"
        elif params:
            url += "?" + urlencode(params)
        if content_type:
            all_headers[b"Content-Type"] = [content_type.encode()]
        response = yield treq.request(method, url, data=body, headers=all_headers, persistent=False)
        content = yield response.content()
        returnValue((response.code, content, response))

    @inlineCallbacks
    def upload(self, server, token, filename, filesize, offset, chunk, **extra):
        params = {
            "token": token,
            "filename": filename,
            "filesize": str(filesize),
            "offset": str(offset),
            "bin": base64.b64encode(chunk).decode(),
        }
        params.update(extra)
        result = yield self.request(server, "POST", "/file/upload", params)
        returnValue(result)

    @inlineCallbacks
    def upload_all(self, server, token, filename, data, chunk=MiB):
        for offset in range(0, max(len(data), 1), chunk):
            code, body, _ = yield self.upload(server, token, filename, len(data), offset, data[offset:offset + chunk])
            self.assertEqual(code, 200, body)
        returnValue(body)

    @inlineCallbacks
    def download(self, server, token, filename, offset=None, block_size=None, path="/file/download", method="GET"):
        params = {"token": token, "filename": filename}
        if offset is not None:
            params["offset"] = str(offset)
        if block_size is not None:
            params["block-size"] = str(block_size)
        result = yield self.request(server, method, path, params)
        returnValue(result)

    @inlineCallbacks
    def assertRefused(self, deferred, text):
        """The seeds' error form: 500, plain text C{text}."""
        code, body, response = yield deferred
        self.assertEqual((code, body.decode("utf-8", "replace")), (500, text))
        self.assertEqual(response.headers.getRawHeaders(b"content-type"), [b"text/plain; charset=utf-8"])
        returnValue(response)

    # -- the round trip

    @inlineCallbacks
    def test_resumable_5mb_upload(self):
        """
        5 MB in 1 MiB chunks; the client stops after three, a crash leaves
        half a chunk in the part file; the client asks where to resume,
        resumes from the server's answer, and the file checks by MD5 and
        downloads back identical in ranges.
        """
        server, alice, bob = yield self.setup_users()
        data = payload(5 * 1000 * 1000, seed=5)
        for offset in (0, MiB, 2 * MiB):
            code, body, response = yield self.upload(
                server, alice, "movie.mp4", len(data), offset, data[offset:offset + MiB]
            )
            self.assertEqual((code, body), (200, str(offset + MiB).encode()))
            self.assertEqual(response.headers.getRawHeaders(b"stored"), [str(offset + MiB).encode()])
        # What a crash mid-chunk leaves: bytes on disk the database never counted.
        row = yield server.store.files.by_name("movie.mp4")
        self.assertEqual((row.stored, row.complete), (3 * MiB, False))
        with open(server.files.storage.part_path(row.id), "ab") as f:
            f.write(b"\xff" * 300_000)
        # Not readable yet, by anyone.
        yield self.assertRefused(
            self.download(server, bob, "movie.mp4"),
            f"movie.mp4 is not completely uploaded: {3 * MiB} of {len(data)} bytes stored",
        )
        # The client lost track: an empty chunk at offset 0 asks the server.
        response = yield self.assertRefused(
            self.upload(server, alice, "movie.mp4", len(data), 0, b""),
            f"offset 0 does not match the {3 * MiB} bytes stored of movie.mp4; resume at offset {3 * MiB}",
        )
        resume = int(response.headers.getRawHeaders(b"stored")[0])
        self.assertEqual(resume, 3 * MiB)
        # A new server process (no memory of the upload) takes the rest.
        second = start_again(self, server)
        body = yield self.upload_all_from(second, alice, "movie.mp4", data, resume)
        self.assertEqual(body, str(len(data)).encode())
        row = yield second.store.files.by_name("movie.mp4")
        self.assertEqual((row.complete, row.md5), (True, hashlib.md5(data).hexdigest()))
        self.assertEqual(row.content_type, "video/mp4")
        # MD5 check, either case.
        for md5 in (hashlib.md5(data).hexdigest(), hashlib.md5(data).hexdigest().upper()):
            code, body, _ = yield self.request(
                second, "POST", "/file/check", {"token": bob, "filename": "movie.mp4", "md5": md5}
            )
            self.assertEqual((code, body), (200, b"ok"))
        # Download in ranges, by another user, GET and POST.
        received = bytearray()
        block = 1_500_000
        for i, offset in enumerate(range(0, len(data), block)):
            code, body, response = yield self.download(
                second, bob, "movie.mp4", offset, block, method="GET" if i % 2 else "POST"
            )
            self.assertEqual(code, 200, body[:200])
            self.assertEqual(response.headers.getRawHeaders(b"fi"), [str(len(data)).encode()])
            self.assertEqual(response.headers.getRawHeaders(b"content-type"), [SEED001_TYPE])
            self.assertEqual(len(body), min(block, len(data) - offset))
            received += body
        self.assertEqual(bytes(received), data)
        # No range: the whole file.
        code, body, _ = yield self.download(second, bob, "movie.mp4")
        self.assertEqual((code, body == data), (200, True))

    @inlineCallbacks
    def upload_all_from(self, server, token, filename, data, offset, chunk=MiB):
        body = None
        while offset < len(data):
            code, body, _ = yield self.upload(server, token, filename, len(data), offset, data[offset:offset + chunk])
            self.assertEqual(code, 200, body)
            offset = int(body)
        returnValue(body)

    @inlineCallbacks
    def test_seed002_multipart_round_trip(self):
        server, alice, bob = yield self.setup_users()
        boundary = "----imdTestBoundary7MA4YWxk"
        # Bytes that look like the framing must come back untouched.
        data = (
            payload(300_000, seed=2) + b"\r\n--" + boundary[:-1].encode() + b"\r\n\r\n--\r\n--"
            + payload(1000, seed=3) + b"\r\n"
        )
        body, ctype = multipart({"note": "hello"}, {"file": ("photo.png", "image/png", data)}, boundary)
        code, answer, response = yield self.request(
            server, "POST", "/upload/mobileFileUpload", sign=False, body=body, content_type=ctype,
            headers={"Authorization": f"Bearer {alice}"},
        )
        self.assertEqual(code, 200, answer)
        self.assertEqual(response.headers.getRawHeaders(b"content-type"), [b"application/json; charset=utf-8"])
        file_id = json.loads(answer)["fileId"]
        # Bob fetches it, with a token parameter (an <img src> has no headers).
        code, got, response = yield self.request(
            server, "GET", f"/upload/mobileFileDownload?fileId={file_id}&token={bob}", sign=False
        )
        self.assertEqual((code, got == data), (200, True))
        self.assertEqual(response.headers.getRawHeaders(b"content-type"), [b"image/png"])
        self.assertEqual(response.length, len(data))
        # Under a projectName prefix, with a Bearer token.
        code, got, _ = yield self.request(
            server, "GET", f"/im/upload/mobileFileDownload?fileId={file_id}", sign=False,
            headers={"Authorization": f"Bearer {bob}"},
        )
        self.assertEqual((code, got == data), (200, True))
        # The fileId is also its seed 001 name.
        code, got, _ = yield self.download(server, bob, file_id, 300_000, 10)
        self.assertEqual((code, got), (200, data[300_000:300_010]))
        row = yield server.store.files.by_id(file_id)
        self.assertEqual((row.owner, row.md5, row.complete), ("alice", hashlib.md5(data).hexdigest(), True))

    @inlineCallbacks
    def test_seed002_upload_forms(self):
        server, alice, bob = yield self.setup_users()
        # A token field, a prefix, a file part without a filename or type.
        body, ctype = multipart({"token": alice}, {"file": (None, None, b"voice bytes")})
        code, answer, _ = yield self.request(
            server, "POST", "/tlim/upload/mobileFileUpload", sign=False, body=body, content_type=ctype
        )
        self.assertEqual(code, 200, answer)
        file_id = json.loads(answer)["fileId"]
        row = yield server.store.files.by_id(file_id)
        self.assertEqual((row.size, row.content_type), (11, "application/octet-stream"))
        # Empty file: fine.
        body, ctype = multipart({"token": alice}, {"upload": ("empty.txt", "text/plain", b"")})
        code, answer, _ = yield self.request(
            server, "POST", "/upload/mobileFileUpload", sign=False, body=body, content_type=ctype
        )
        self.assertEqual(code, 200, answer)
        code, got, _ = yield self.request(
            server, "GET", f"/upload/mobileFileDownload?fileId={json.loads(answer)['fileId']}&token={bob}", sign=False
        )
        self.assertEqual((code, got), (200, b""))

    @inlineCallbacks
    def test_seed002_refusals(self):
        server, alice, bob = yield self.setup_users(max_size=1000, quota=1500)
        body, ctype = multipart({}, {"file": ("a.bin", None, b"x")})
        yield self.assertRefused(
            self.request(server, "POST", "/upload/mobileFileUpload", sign=False, body=body, content_type=ctype),
            "a token is required: an Authorization: Bearer header or a token parameter",
        )
        yield self.assertRefused(
            self.request(
                server, "POST", "/upload/mobileFileUpload", sign=False, body=body, content_type=ctype,
                headers={"Authorization": "Bearer nope"},
            ),
            "The token is unknown, expired or revoked",
        )
        auth = {"Authorization": f"Bearer {alice}"}
        body, ctype = multipart({"note": "x"}, {})
        yield self.assertRefused(
            self.request(server, "POST", "/upload/mobileFileUpload", sign=False, body=body, content_type=ctype, headers=auth),
            'a multipart body with the file in a part named "file" is required',
        )
        body, ctype = multipart({}, {"file": ("big.bin", None, b"x" * 1001)})
        yield self.assertRefused(
            self.request(server, "POST", "/upload/mobileFileUpload", sign=False, body=body, content_type=ctype, headers=auth),
            "the file of 1001 bytes is over the limit of 1000 bytes",
        )
        body, ctype = multipart({}, {"file": ("a.bin", None, b"x" * 1000)})
        code, _, _ = yield self.request(
            server, "POST", "/upload/mobileFileUpload", sign=False, body=body, content_type=ctype, headers=auth
        )
        self.assertEqual(code, 200)
        yield self.assertRefused(
            self.request(server, "POST", "/upload/mobileFileUpload", sign=False, body=body, content_type=ctype, headers=auth),
            "the upload would exceed your quota: 1000 of 1500 bytes are used, 1000 more requested",
        )
        # A refused upload leaves nothing behind.
        usage = yield server.store.files.usage("alice")
        self.assertEqual(usage, 1000)
        # Truncated: the closing boundary never came.
        body, ctype = multipart({}, {"file": ("a.bin", None, b"abc")})
        yield self.assertRefused(
            self.request(
                server, "POST", "/upload/mobileFileUpload", sign=False, body=body[:-30], content_type=ctype, headers=auth
            ),
            "the multipart body is truncated: its closing boundary is missing",
        )
        yield self.assertRefused(
            self.request(
                server, "POST", "/upload/mobileFileUpload", sign=False, body=body, content_type="multipart/form-data",
                headers=auth,
            ),
            "the multipart body needs a boundary of 1-70 characters",
        )
        body, ctype = multipart({}, {"one": ("a", None, b"1"), "other": ("b", None, b"2")})
        yield self.assertRefused(
            self.request(server, "POST", "/upload/mobileFileUpload", sign=False, body=body, content_type=ctype, headers=auth),
            "one file per upload",
        )
        yield self.assertRefused(
            self.request(server, "GET", f"/upload/mobileFileDownload?fileId=nope&token={bob}", sign=False),
            "no file named nope",
        )
        yield self.assertRefused(
            self.request(server, "GET", f"/upload/mobileFileDownload?token={bob}", sign=False),
            "fileId is required",
        )
        yield self.assertRefused(
            self.request(server, "GET", f"/upload/mobileFileDownload?fileId=..%2Fetc&token={bob}", sign=False),
            "fileId must not contain a path separator (/ or \\)",
        )

    # -- refusals of /file/upload

    @inlineCallbacks
    def test_name_refusals(self):
        server, alice, _ = yield self.setup_users()
        for name, text in [
            ("a/b.jpg", "filename must not contain a path separator (/ or \\)"),
            ("..\\b.jpg", "filename must not contain a path separator (/ or \\)"),
            ("../../etc/passwd", "filename must not contain a path separator (/ or \\)"),
            ("..", "filename must not contain .."),
            ("a\x00.jpg", "filename must not contain NUL or other control characters"),
            ("a\x1b.jpg", "filename must not contain NUL or other control characters"),
            ("n" * 256, "filename must be at most 255 characters"),
            ("", "filename is required"),
        ]:
            yield self.assertRefused(self.upload(server, alice, name, 3, 0, b"abc"), text)
        count = yield server.store.files.usage("alice")
        self.assertEqual(count, 0)
        self.assertEqual(os.listdir(self.files_config["dir"]) if os.path.exists(self.files_config["dir"]) else [], [])

    @inlineCallbacks
    def test_size_refusals(self):
        server, alice, bob = yield self.setup_users(max_size=1000, max_chunk=100, quota=2500)
        yield self.assertRefused(
            self.upload(server, alice, "big", 1001, 0, b"x"), "filesize 1001 is over the limit of 1000 bytes"
        )
        yield self.assertRefused(
            self.upload(server, alice, "over", 10, 0, b"x" * 11),
            "the chunk overruns filesize: offset 0 + 11 bytes > 10 bytes",
        )
        yield self.assertRefused(
            self.upload(server, alice, "chunky", 1000, 0, b"x" * 101),
            "the chunk of 101 bytes is over the limit of 100 bytes",
        )
        # The quota counts unfinished uploads at their declared size.
        code, _, _ = yield self.upload(server, alice, "one", 1000, 0, b"x" * 100)
        self.assertEqual(code, 200)
        code, _, _ = yield self.upload(server, alice, "two", 1000, 0, b"")
        self.assertEqual(code, 200)
        yield self.assertRefused(
            self.upload(server, alice, "three", 501, 0, b""),
            "the upload would exceed your quota: 2000 of 2500 bytes are used, 501 more requested",
        )
        # Bob's quota is his own.
        code, _, _ = yield self.upload(server, bob, "three", 501, 0, b"")
        self.assertEqual(code, 200)
        # Overrunning the declared size in the middle of an upload.
        yield self.assertRefused(
            self.upload(server, alice, "one", 150, 100, b"x" * 50),
            "filesize 150 differs from the 1000 bytes given when the upload of one started",
        )
        yield self.assertRefused(
            self.upload(server, alice, "one", 1000, 950, b"x" * 51),
            "the chunk overruns filesize: offset 950 + 51 bytes > 1000 bytes",
        )
        # A body too big to be a chunk is refused unparsed.
        limit = 3 * 4 * 34 + 65536
        code, body, _ = yield self.request(
            server, "POST", "/file/upload", sign=False, body=b"bin=" + b"A" * limit,
            content_type="application/x-www-form-urlencoded",
        )
        self.assertEqual(
            (code, body.decode()), (500, f"the request body of {limit + 4} bytes is over the limit of {limit} bytes")
        )

    @inlineCallbacks
    def test_offset_and_owner_refusals(self):
        server, alice, bob = yield self.setup_users()
        yield self.assertRefused(
            self.upload(server, alice, "f.txt", 10, 5, b"abc"),
            "offset 5 does not match the 0 bytes stored of f.txt; resume at offset 0",
        )
        code, body, _ = yield self.upload(server, alice, "f.txt", 10, 0, b"abcd")
        self.assertEqual((code, body), (200, b"4"))
        yield self.assertRefused(
            self.upload(server, alice, "f.txt", 10, 2, b"cdef"),
            "offset 2 does not match the 4 bytes stored of f.txt; resume at offset 4",
        )
        yield self.assertRefused(
            self.upload(server, alice, "f.txt", 10, 11, b""),
            "the chunk overruns filesize: offset 11 + 0 bytes > 10 bytes",
        )
        # Bob may not continue (or learn anything about) alice's unfinished upload.
        yield self.assertRefused(
            self.upload(server, bob, "f.txt", 10, 4, b"efgh"), "the name f.txt belongs to another user"
        )
        yield self.assertRefused(
            self.upload(server, bob, "f.txt", 10, 0, b"evil"), "the name f.txt belongs to another user"
        )
        code, body, _ = yield self.upload(server, alice, "f.txt", 10, 4, b"efghij")
        self.assertEqual((code, body), (200, b"10"))
        yield self.assertRefused(
            self.upload(server, alice, "f.txt", 10, 0, b"abcd"),
            "f.txt is already complete (10 bytes); a name is uploaded once",
        )
        yield self.assertRefused(
            self.upload(server, bob, "f.txt", 10, 0, b"abcd"), "the name f.txt belongs to another user"
        )
        code, body, _ = yield self.download(server, bob, "f.txt")
        self.assertEqual((code, body), (200, b"abcdefghij"))

    @inlineCallbacks
    def test_parameter_refusals(self):
        server, alice, _ = yield self.setup_users()
        good = {"token": alice, "filename": "p.txt", "filesize": "3", "offset": "0", "bin": "YWJj"}

        def without(*keys, **changes):
            params = {k: v for k, v in good.items() if k not in keys}
            params.update(changes)
            return params

        cases = [
            (without(bin="not base64!"), "bin is not valid base64"),
            (without(bin="YWJ"), "bin is not valid base64"),
            (without("bin"), "bin is required"),
            (without(offset="-1"), "offset must be a non-negative integer"),
            (without(offset="0x10"), "offset must be a non-negative integer"),
            (without("offset"), "offset is required"),
            (without(filesize="three"), "filesize must be a non-negative integer"),
            (without(filesize="1e3"), "filesize must be a non-negative integer"),
            (without(filesize="9" * 70), "filesize must be a non-negative integer"),
            (without("filesize"), "filesize is required"),
            (without("filename"), "filename is required"),
            (without("token"), "token is required"),
            (without(token="nope"), "The token is unknown, expired or revoked"),
        ]
        for params, text in cases:
            yield self.assertRefused(self.request(server, "POST", "/file/upload", params), text)
        # Signatures: missing, wrong, or over other values.
        yield self.assertRefused(
            self.request(server, "POST", "/file/upload", good, sign=False), "signature is required"
        )
        yield self.assertRefused(
            self.request(server, "POST", "/file/upload", {**good, "signature": "0" * 32}),
            "signature does not match the parameters",
        )
        forged = dict(good, signature=signing.sign({k: v for k, v in good.items() if k != "bin"}), offset="1")
        yield self.assertRefused(
            self.request(server, "POST", "/file/upload", forged), "signature does not match the parameters"
        )
        # A parameter in the query and the body at once.
        params = dict(good, signature=signing.sign({k: v for k, v in good.items() if k != "bin"}))
        yield self.assertRefused(
            self.request(
                server, "POST", "/file/upload?offset=0", sign=False, body=urlencode(params).encode(),
                content_type="application/x-www-form-urlencoded",
            ),
            "parameter offset is given more than once",
        )
        # Nothing was created by any of it.
        row = yield server.store.files.by_name("p.txt")
        self.assertIsNone(row)
        # The good one, signed in lower case, works; bin may carry line breaks.
        params = dict(good, bin="YW\r\nJj")
        params["signature"] = signing.sign({k: v for k, v in params.items() if k != "bin"}).lower()
        code, body, _ = yield self.request(server, "POST", "/file/upload", params)
        self.assertEqual((code, body), (200, b"3"))

    @inlineCallbacks
    def test_json_and_multipart_upload_bodies(self):
        server, alice, bob = yield self.setup_users()
        data = payload(5000, seed=9)
        # JSON with numbers: signed as their text.
        params = {"token": alice, "filename": "j.bin", "filesize": 5000, "offset": 0}
        params["signature"] = signing.sign(params)
        params["bin"] = base64.b64encode(data[:2000]).decode()
        code, body, _ = yield self.request(
            server, "POST", "/file/upload", sign=False, body=json.dumps(params).encode(), content_type="application/json"
        )
        self.assertEqual((code, body), (200, b"2000"))
        # Multipart form fields, the rest of the file.
        fields = {"token": alice, "filename": "j.bin", "filesize": "5000", "offset": "2000"}
        fields["signature"] = signing.sign(fields)
        fields["bin"] = base64.b64encode(data[2000:]).decode()
        body, ctype = multipart(fields, {})
        code, answer, _ = yield self.request(server, "POST", "/file/upload", sign=False, body=body, content_type=ctype)
        self.assertEqual((code, answer), (200, b"5000"))
        code, got, _ = yield self.download(server, bob, "j.bin")
        self.assertEqual(got, data)
        # Not JSON.
        yield self.assertRefused(
            self.request(server, "POST", "/file/upload", sign=False, body=b"{nope", content_type="application/json"),
            "the body is not JSON: unexpected character, expected a string key: line 1 column 2 (char 1)",
        )

    # -- purging unfinished uploads

    @inlineCallbacks
    def test_unfinished_uploads_are_purged_after_their_ttl(self):
        server, alice, bob = yield self.setup_users(unfinished_ttl=3600)

        class Clock:
            now = 1_800_000_000.0

            def seconds(self):
                return self.now

        clock = server.files._clock = Clock()
        yield self.upload(server, alice, "old.bin", 5000, 0, b"x" * 1000)      # abandoned
        yield self.upload_all(server, alice, "done.bin", b"y" * 10)            # complete
        clock.now += 3000
        yield self.upload(server, alice, "recent.bin", 5000, 0, b"z" * 1000)   # still going
        old = yield server.store.files.by_name("old.bin")
        self.assertTrue(os.path.exists(server.files.storage.part_path(old.id)))
        clock.now += 601
        # The hourly job of the server, as its timer runs it.
        yield server._purge_tokens()
        self.assertIsNone((yield server.store.files.by_name("old.bin")))
        self.assertIsNotNone((yield server.store.files.by_name("recent.bin")))
        self.assertIsNotNone((yield server.store.files.by_name("done.bin")))
        self.assertFalse(os.path.exists(server.files.storage.part_path(old.id)))
        self.assertEqual((yield server.store.files.usage("alice")), 5010)
        code, text, _ = yield self.http(server, "GET", "/metrics")
        self.assertIn(b"imd_unfinished_uploads_purged_total 1.0", text)
        # The client that comes back is told where to resume: at 0.
        response = yield self.assertRefused(
            self.upload(server, alice, "old.bin", 5000, 1000, b"x" * 1000),
            "offset 1000 does not match the 0 bytes stored of old.bin; resume at offset 0",
        )
        self.assertEqual(response.headers.getRawHeaders(b"stored"), [b"0"])
        # 0 turns the purge off.
        self.assertEqual((yield FileService(server.store, server.files.storage,
                                            Config.from_dict({"files": {"unfinished_ttl": 0}}).files,
                                            clock).purge_unfinished()), 0)

    # -- downloads and checks

    @inlineCallbacks
    def test_http_range_on_both_download_routes(self):
        """Range: bytes=… gets 206 and Content-Range, as curl -C - and browsers resume."""
        server, alice, bob = yield self.setup_users()
        data = payload(1000, seed=7)
        yield self.upload_all(server, alice, "r.bin", data)
        file_id = "r.bin"
        routes = [
            lambda headers: self.download(server, bob, "r.bin") if not headers else self.request(
                server, "GET", "/file/download", {"token": bob, "filename": "r.bin"}, headers=headers),
            lambda headers: self.request(
                server, "GET", f"/upload/mobileFileDownload?fileId={file_id}&token={bob}", sign=False,
                headers=headers),
        ]
        for route in routes:
            code, body, response = yield route({})
            self.assertEqual((code, body == data), (200, True))
            self.assertEqual(response.headers.getRawHeaders(b"accept-ranges"), [b"bytes"])
            etag = response.headers.getRawHeaders(b"etag")[0]
            for header, start, end in (("bytes=100-199", 100, 199), ("bytes=900-", 900, 999),
                                       ("bytes=-10", 990, 999), ("bytes=990-5000", 990, 999)):
                code, body, response = yield route({"Range": header})
                self.assertEqual((code, body), (206, data[start:end + 1]), header)
                self.assertEqual(response.headers.getRawHeaders(b"content-range"),
                                 [f"bytes {start}-{end}/1000".encode()])
                self.assertEqual(response.length, end + 1 - start)
            code, body, response = yield route({"Range": "bytes=1000-"})
            self.assertEqual(code, 416, body[:100])
            self.assertEqual(response.headers.getRawHeaders(b"content-range"), [b"bytes */1000"])
            # Several ranges, or garbage: the whole file, as RFC 9110 allows.
            for header in ("bytes=0-1,5-6", "bytes=zz", "lines=1-2"):
                code, body, _ = yield route({"Range": header})
                self.assertEqual((code, body == data), (200, True), header)
            # If-Range: the range only while the file is the one the client has.
            code, body, _ = yield route({"Range": "bytes=0-9", "If-Range": etag.decode()})
            self.assertEqual((code, body), (206, data[:10]))
            code, body, _ = yield route({"Range": "bytes=0-9", "If-Range": '"other"'})
            self.assertEqual((code, body == data), (200, True))
        # The seed's own window still works, and wins over a Range header.
        code, body, response = yield self.request(
            server, "GET", "/file/download", {"token": bob, "filename": "r.bin", "offset": "10", "block-size": "5"},
            headers={"Range": "bytes=0-0"},
        )
        self.assertEqual((code, body), (200, data[10:15]))
        self.assertEqual(response.headers.getRawHeaders(b"fi"), [b"1000"])

    @inlineCallbacks
    def test_download_refusals_and_windows(self):
        server, alice, bob = yield self.setup_users()
        yield self.upload_all(server, alice, "d.txt", b"0123456789")
        # A block-size past the end reads to the end; a huge one too.
        code, body, response = yield self.download(server, bob, "d.txt", 7, 10**30)
        self.assertEqual((code, body), (200, b"789"))
        self.assertEqual(response.length, 3)
        # block-size 0: only the FI header, the size.
        code, body, response = yield self.download(server, bob, "d.txt", 0, 0)
        self.assertEqual((code, body, response.headers.getRawHeaders(b"fi")), (200, b"", [b"10"]))
        # At the very end: nothing, fine.
        code, body, _ = yield self.download(server, bob, "d.txt", 10)
        self.assertEqual((code, body), (200, b""))
        yield self.assertRefused(
            self.download(server, bob, "d.txt", 11), "offset 11 is past the end of d.txt (10 bytes)"
        )
        yield self.assertRefused(self.download(server, bob, "d.txt", -1), "offset must be a non-negative integer")
        yield self.assertRefused(
            self.download(server, bob, "d.txt", 0, "-5"), "block-size must be a non-negative integer"
        )
        yield self.assertRefused(self.download(server, bob, "nope.txt"), "no file named nope.txt")
        yield self.assertRefused(
            self.download(server, bob, "../d.txt"), "filename must not contain a path separator (/ or \\)"
        )
        yield self.assertRefused(
            self.download(server, bob, "/file/d.txt"), "filename must not contain a path separator (/ or \\)"
        )
        yield self.assertRefused(
            self.request(server, "GET", "/file/download", {"filename": "d.txt"}), "token is required"
        )
        yield self.assertRefused(
            self.request(server, "GET", "/file/download", {"token": bob, "filename": "d.txt", "signature": "x"}),
            "signature does not match the parameters",
        )
        yield self.upload(server, alice, "half.txt", 10, 0, b"12345")
        yield self.assertRefused(
            self.download(server, bob, "half.txt"), "half.txt is not completely uploaded: 5 of 10 bytes stored"
        )

    @inlineCallbacks
    def test_check_refusals(self):
        server, alice, bob = yield self.setup_users()
        yield self.upload_all(server, alice, "c.txt", b"check me")
        md5 = hashlib.md5(b"check me").hexdigest()
        wrong = "0" * 32
        for params, text in [
            ({"token": bob, "filename": "c.txt", "md5": wrong}, f"md5 {wrong} does not match c.txt, whose md5 is {md5}"),
            ({"token": bob, "filename": "c.txt", "md5": "xyz"}, "md5 must be 32 hexadecimal digits"),
            ({"token": bob, "filename": "c.txt"}, "md5 is required"),
            ({"token": bob, "filename": "none.txt", "md5": md5}, "no file named none.txt"),
        ]:
            yield self.assertRefused(self.request(server, "POST", "/file/check", params), text)
        yield self.upload(server, alice, "h.txt", 10, 0, b"12345")
        yield self.assertRefused(
            self.request(server, "POST", "/file/check", {"token": alice, "filename": "h.txt", "md5": md5}),
            "h.txt is not completely uploaded: 5 of 10 bytes stored",
        )

    @inlineCallbacks
    def test_concurrent_chunks_at_one_offset(self):
        """Two chunks for the same offset at once: one counts, the other is told where to resume."""
        server, alice, _ = yield self.setup_users()
        yield self.upload(server, alice, "race.bin", 200_000, 0, b"")
        results = yield DeferredList(
            [self.upload(server, alice, "race.bin", 200_000, 0, payload(100_000, seed=s)) for s in (1, 2)],
            fireOnOneErrback=True,
        )
        outcomes = sorted((code, body.decode()) for _, (code, body, _) in results)
        self.assertEqual(
            outcomes,
            [(200, "100000"), (500, "offset 0 does not match the 100000 bytes stored of race.bin; resume at offset 100000")],
        )

    @inlineCallbacks
    def test_a_chunk_write_outlives_its_client(self):
        """
        A client that goes away while its chunk is being written does not
        release the name: its retry waits until the first write has ended,
        so two writes never share the part file.
        """
        server, alice, _ = yield self.setup_users()
        storage = server.files.storage
        gate, started = Deferred(), Deferred()
        writes = []

        def slow_write(key, offset, source, length):
            writes.append(offset)
            if len(writes) == 1:
                started.callback(None)
                return gate.addCallback(lambda _: LocalStorage.write(storage, key, offset, source, length))
            return LocalStorage.write(storage, key, offset, source, length)

        self.patch(storage, "write", slow_write)
        first = server.files.upload_chunk("alice", "slow.bin", 10, 0, b"12345")
        yield started
        first.cancel()
        self.failureResultOf(first, CancelledError)
        retry = server.files.upload_chunk("alice", "slow.bin", 10, 0, b"12345")
        # Long enough for the retry to reach the disk if the name were free.
        yield deferLater(reactor, 0.3, lambda: None)
        self.assertNoResult(retry)
        self.assertEqual(writes, [0])
        gate.callback(None)
        e = yield self.assertFailure(retry, OffsetMismatch)
        self.assertEqual(e.stored, 5)
        row = yield server.store.files.by_name("slow.bin")
        self.assertEqual(row.stored, 5)

    @inlineCallbacks
    def test_client_going_away_mid_download(self):
        """A client that drops the connection mid-download stops the transfer, and nothing else."""
        server, alice, bob = yield self.setup_users()
        data = payload(3 * MiB, seed=4)
        yield self.upload_all(server, alice, "gone.bin", data)
        host, port = server.address("http")
        params = {"token": bob, "filename": "gone.bin"}
        params["signature"] = signing.sign(params)

        class Impatient(Protocol):
            def connectionMade(self):
                self.got = 0
                self.head = b""
                self.gone = Deferred()
                self.transport.write(
                    f"GET /file/download?{urlencode(params)} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
                )

            def dataReceived(self, data):
                if b"\r\n\r\n" not in self.head:
                    # The head, as sent: the seed spells the header FI.
                    self.head += data[:4096]
                self.got += len(data)
                # Some of the body, then away, without a goodbye.
                if self.got > 100_000:
                    self.transport.abortConnection()

            def connectionLost(self, reason):
                self.gone.callback(self.got)

        client = yield connectProtocol(TCP4ClientEndpoint(reactor, host, port), Impatient())
        got = yield client.gone
        self.assertLess(got, len(data))
        self.assertIn(b"\r\nFI: 3145728\r\n", client.head)
        code, body, _ = yield self.download(server, bob, "gone.bin", 0, 10)
        self.assertEqual((code, body), (200, data[:10]))
        # Time for the server to see the reset of the abandoned connection.
        yield deferLater(reactor, 0.2, lambda: None)

    # -- avatars

    @inlineCallbacks
    def test_avatar_names_an_uploaded_file(self):
        server, alice, bob = yield self.setup_users()

        @inlineCallbacks
        def set_avatar(token, avatar):
            code, body, _ = yield self.http(
                server, "POST", "/qid/QID_IM_SET_ROSTER_AVATAR", {"avatar": avatar}, token=token
            )
            returnValue((code, body))

        code, body = yield set_avatar(alice, "/file/me.jpg")
        self.assertEqual(
            (code, body),
            (400, {"type": "error", "code": "invalid_field",
                   "err": "avatar must be an uploaded file: there is no file named me.jpg"}),
        )
        yield self.upload(server, alice, "me.jpg", 6, 0, b"jpe")
        code, body = yield set_avatar(alice, "me.jpg")
        self.assertEqual((code, body["err"]), (400, "avatar must be a complete file: me.jpg has 3 of 6 bytes"))
        code, body = yield set_avatar(alice, "/file/../x")
        self.assertEqual((code, body["err"]), (400, "avatar must not contain a path separator (/ or \\)"))
        yield self.upload(server, alice, "me.jpg", 6, 3, b"g!!")
        for avatar in ("/file/me.jpg", "me.jpg"):
            code, body = yield set_avatar(alice, avatar)
            self.assertEqual((code, body), (200, {"type": "text", "result": "1"}))
        profile = yield server.profiles.get("alice")
        self.assertEqual(profile["avatar"], "me.jpg")
        # No avatar is fine too.
        code, _ = yield set_avatar(alice, "")
        self.assertEqual(code, 200)
        # /file/download/head serves it by either form.
        for name in ("/file/me.jpg", "me.jpg"):
            code, got, response = yield self.download(server, bob, name, path="/file/download/head")
            self.assertEqual((code, got), (200, b"jpeg!!"))
            self.assertEqual(response.headers.getRawHeaders(b"fi"), [b"6"])


def start_again(testcase, server):
    """A second server on the same database and files directory: a restart, as far as files go."""
    from tests.support import start_server

    return start_server(testcase, server.config)


class SQLiteFilesTests(FilesTestsMixin, SQLiteBackend, unittest.TestCase):
    pass


class PostgresFilesTests(FilesTestsMixin, PostgresBackend, unittest.TestCase):
    pass


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of a process, in KiB."""
    values = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0])
    return values


class DownloadMemoryTests(ProcessTestMixin, unittest.TestCase):
    """
    A 200 MB download from a real server process: its peak RSS while
    streaming, minus its RSS just before, stays under 20 MB.  Not a timing:
    the kernel's count of resident pages.
    """

    SIZE = 200 * 1000 * 1000
    LIMIT_KIB = 20 * 1024

    if not os.path.exists("/proc/self/status"):
        skip = "needs Linux /proc"

    @inlineCallbacks
    def test_200mb_download_memory(self):
        cwd = self.empty_dir()
        env = child_env(IMD_FILES_MAX_SIZE=str(self.SIZE), IMD_FILES_QUOTA=str(2 * self.SIZE))
        yield self.cli(cwd, env, "db", "upgrade")
        yield self.cli(cwd, env, "user", "add", "alice", "--password", "secret1")
        child, base, _ = yield self.start_imd(cwd, env)
        pid = child.transport.pid
        code, body = yield self.http(base, "POST", "/auth/login", {"uid": "alice", "password": "secret1"})
        self.assertEqual(code, 200, body)
        token = body["token"]

        # A small upload through the API warms every code path up.
        small = payload(100_000)
        params = {"token": token, "filename": "warm.bin", "filesize": str(len(small)), "offset": "0"}
        params["signature"] = signing.sign(params)
        params["bin"] = base64.b64encode(small).decode()
        response = yield treq.post(base + "/file/upload", data=params, persistent=False)
        self.assertEqual(response.code, 200, (yield response.content()))

        # The 200 MB file is written straight into the store: a sparse file
        # (no disk, no time) and its row, as a finished upload leaves them.
        storage = LocalStorage(os.path.join(cwd, "var", "files"), reactor)
        file_id = "0123456789abcdef0123456789abcdef"
        os.makedirs(os.path.dirname(storage.final_path(file_id)), exist_ok=True)
        with open(storage.final_path(file_id), "wb") as f:
            f.truncate(self.SIZE)
        engine = create_engine(f"sqlite:///{cwd}/var/imd.sqlite3")
        with engine.begin() as conn:
            conn.execute(
                insert(schema.files).values(
                    id=file_id, name="big.bin", owner="alice", size=self.SIZE, stored=self.SIZE,
                    md5="0" * 32, content_type="application/octet-stream", complete=True,
                    created_at=0, updated_at=0,
                )
            )
        engine.dispose()

        def url(filename, **extra):
            params = {"token": token, "filename": filename, **extra}
            params["signature"] = signing.sign(params)
            return base + "/file/download?" + urlencode(params)

        @inlineCallbacks
        def fetch(u):
            received = [0]
            response = yield treq.get(u, unbuffered=True, persistent=False)
            self.assertEqual(response.code, 200)

            def discard(data):
                received[0] += len(data)

            yield treq.collect(response, discard)
            returnValue((received[0], response))

        yield fetch(url("warm.bin"))
        yield fetch(url("big.bin", **{"block-size": str(4 * MiB)}))

        # Start the peak counter from here (Linux: "5" resets VmHWM to the
        # current RSS), so start-up's own peak does not hide the download's.
        try:
            with open(f"/proc/{pid}/clear_refs", "w") as f:
                f.write("5")
            reset = True
        except OSError:
            reset = False
        before = memory_kib(pid)
        # VmHWM is the kernel's own peak; sampling VmRSS meanwhile is a
        # second witness that does not depend on when the kernel updates it.
        sampled = [before["VmRSS"]]
        sampler = LoopingCall(lambda: sampled.append(memory_kib(pid)["VmRSS"]))
        sampler.start(0.02)
        try:
            got, response = yield fetch(url("big.bin"))
        finally:
            sampler.stop()
        after = memory_kib(pid)
        self.assertEqual(got, self.SIZE)
        self.assertEqual(response.headers.getRawHeaders(b"fi"), [str(self.SIZE).encode()])
        baseline = before["VmRSS"] if reset else max(before["VmRSS"], before["VmHWM"])
        peak = max(after["VmHWM"], max(sampled))
        growth = peak - baseline
        report = (
            f"200 MB download: RSS before {before['VmRSS']} KiB, peak during {peak} KiB"
            f" (VmHWM {after['VmHWM']}, highest of {len(sampled)} VmRSS samples {max(sampled)}),"
            f" RSS after {after['VmRSS']} KiB, growth {growth} KiB (limit {self.LIMIT_KIB} KiB,"
            f" peak counter {'reset' if reset else 'not resettable'})"
        )
        sys.stderr.write(report + "\n")
        with open(os.path.join(os.path.dirname(os.path.abspath(self.mktemp())), "memory.txt"), "w") as f:
            f.write(report + "\n")
        self.assertLess(growth, self.LIMIT_KIB, report)
        yield self.stop(child)
