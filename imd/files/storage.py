# -*- test-case-name: tests.test_files -*-
"""
File bytes: the interface the file service stores through, and the
local-disk implementation used by default.

The database row of a file (:mod:`imd.store.files`) is the truth about how
many bytes of an upload were acknowledged; the storage never decides that.
It is told "write these bytes at offset N" where N is the acknowledged
count, and it makes that true:

- an upload in progress is a part file; bytes found past N are what a
  crash left of a chunk that was never acknowledged, and are cut off before
  anything is written (they are never trusted, even if they look complete);
- a chunk counts only after it is fully written and fsynced, and only the
  caller's database update that follows makes it count;
- finishing truncates the part file to the acknowledged size, fsyncs it,
  computes its MD5 and renames it to its final name (fsyncing the
  directory), so a finished file is never seen half-written.

Reads are Twisted pull producers over a byte range, so a download of any
size holds one block in memory at a time.

An object-store backend implements L{IFileStorage} the same way (multipart
upload parts, a final compose); nothing outside this module touches paths.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
from typing import Any, BinaryIO

from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.interfaces import IConsumer, IPullProducer
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from zope.interface import Interface, implementer

log = Logger()

# Copy and hash in blocks this big: large enough for throughput, small
# enough that a 100 MB file never sits in memory.
COPY_BLOCK = 1 << 20
# What one resumeProducing writes to the HTTP connection.
SEND_BLOCK = 1 << 16

# Keys are ids the file service generates (uuid4), never client text; the
# check is a second wall against a path ever being built from input.
_KEY = re.compile(r"\A[0-9A-Za-z][0-9A-Za-z_-]{0,63}\Z")


class StorageError(Exception):
    """The storage cannot do what was asked; the message says why."""


class MissingData(StorageError):
    """
    Fewer bytes are on disk than the caller says were stored: the part or
    final file was removed or truncated outside imd.  C{have} is how many
    bytes are there.
    """

    def __init__(self, key: str, have: int, expected: int) -> None:
        super().__init__(f"file {key} has {have} bytes on disk, {expected} expected")
        self.key = key
        self.have = have
        self.expected = expected


class ConsumerGone(Exception):
    """The consumer stopped the transfer: for HTTP, the client went away."""


class IFileStorage(Interface):
    """Bytes of files, by key.  Every method returns a Deferred."""

    def write(key: str, offset: int, source: bytes | BinaryIO, length: int) -> Deferred:
        """
        Make the part file of C{key} hold its first C{offset} bytes followed
        by C{length} bytes read from C{source} (bytes, or a file positioned
        where they start), durably, then fire with C{None}.

        Bytes past C{offset} are discarded first: they were never
        acknowledged.  Fails with L{MissingData} when fewer than C{offset}
        bytes are there.
        """

    def finish(key: str, size: int) -> Deferred:
        """
        Make the first C{size} bytes of the part file the file of C{key},
        durably; fire with their MD5 (lower-case hex).  Safe to repeat: a
        file already finished is only hashed again.
        """

    def open(key: str, offset: int, length: int) -> Deferred:
        """
        Fire with a L{RangeProducer} of C{length} bytes of the finished file
        of C{key} from C{offset}.  Fails with L{MissingData} when the file
        is shorter than C{offset + length}.
        """

    def delete(key: str) -> Deferred:
        """Remove every byte of C{key}, finished or not; missing is fine."""


@implementer(IPullProducer)
class RangeProducer:
    """
    Sends C{length} bytes of an open file to a consumer, one block per
    C{resumeProducing}: the consumer (an HTTP request) pulls the next block
    only when its transport has room, so memory stays flat whatever the
    file's size.  Blocks are read on the reactor thread, as
    C{twisted.web.static} does: a block is small and usually in the page
    cache.
    """

    def __init__(self, f: BinaryIO, key: str, length: int) -> None:
        self._file: BinaryIO | None = f
        self._key = key
        self._length = length
        self._remaining = length
        self._consumer: IConsumer | None = None
        self._done: Deferred | None = None

    @property
    def length(self) -> int:
        return self._length

    def send(self, consumer: IConsumer) -> Deferred:
        """
        Register with C{consumer} and write the range to it.  Fires with the
        number of bytes sent; fails with L{MissingData} if the file ends
        early, L{ConsumerGone} when the consumer stops us, or
        C{CancelledError} when the Deferred is cancelled.
        """
        if self._done is not None:
            raise RuntimeError("a RangeProducer sends once")
        self._done = Deferred(lambda d: self._abandon())
        if self._remaining == 0:
            self._close()
            self._done.callback(0)
            return self._done
        self._consumer = consumer
        consumer.registerProducer(self, False)
        return self._done

    def resumeProducing(self) -> None:
        if self._file is None or self._done is None or self._done.called:
            return
        try:
            data = self._file.read(min(SEND_BLOCK, self._remaining))
        except OSError as e:
            self._fail(StorageError(f"reading file {self._key}: {e.strerror}"))
            return
        if not data:
            sent = self._length - self._remaining
            self._fail(MissingData(self._key, sent, self._length))
            return
        self._remaining -= len(data)
        self._consumer.write(data)
        if self._remaining == 0:
            self._unregister()
            self._close()
            if not self._done.called:
                self._done.callback(self._length)

    def stopProducing(self) -> None:
        # The consumer is going away (for HTTP: the transport lost its
        # connection and tells us before it tells the request).
        self._fail(ConsumerGone(f"sending file {self._key} stopped by the consumer"))

    def close(self) -> None:
        """Give up before L{send}: close the file."""
        self._close()

    def _abandon(self) -> None:
        # Cancelled: the consumer may be gone already, so it is not touched.
        self._consumer = None
        self._close()
        if self._done is not None and not self._done.called:
            self._done.errback(CancelledError(f"sending file {self._key} cancelled"))

    def _fail(self, error: Exception) -> None:
        self._unregister()
        self._close()
        if self._done is not None and not self._done.called:
            self._done.errback(error)

    def _unregister(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is None:
            return
        try:
            consumer.unregisterProducer()
        except Exception:
            # A consumer already torn down (a request whose connection is
            # gone) has nothing left to unregister from.
            log.debug("{consumer} could not unregister its producer", consumer=consumer)

    def _close(self) -> None:
        f, self._file = self._file, None
        if f is not None:
            f.close()


def _fsync_dir(path: str) -> None:
    # A new or renamed directory entry is durable only once the directory
    # itself is fsynced.
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@implementer(IFileStorage)
class LocalStorage:
    """
    Files under C{root}: C{root/<k[:2]>/<key>.part} while uploading,
    C{root/<k[:2]>/<key>} once finished (two-character fan-out, so no
    directory holds every file).  Blocking work runs on C{threadpool}
    (default: the reactor's).
    """

    def __init__(self, root: str, reactor: Any = None, threadpool: Any = None) -> None:
        if reactor is None:
            from twisted.internet import reactor
        self.root = os.path.abspath(root)
        self._reactor = reactor
        self._threadpool = threadpool

    def _defer(self, fn, *args) -> Deferred:
        pool = self._threadpool if self._threadpool is not None else self._reactor.getThreadPool()
        return deferToThreadPool(self._reactor, pool, fn, *args)

    def _dir(self, key: str) -> str:
        if not isinstance(key, str) or not _KEY.match(key):
            raise StorageError(f"not a storage key: {key!r}")
        return os.path.join(self.root, key[:2].lower())

    def part_path(self, key: str) -> str:
        return os.path.join(self._dir(key), key + ".part")

    def final_path(self, key: str) -> str:
        return os.path.join(self._dir(key), key)

    # -- writing

    def write(self, key: str, offset: int, source: bytes | BinaryIO, length: int) -> Deferred:
        if isinstance(source, (bytes, bytearray, memoryview)):
            if len(source) != length:
                raise ValueError("length must be the length of the bytes")
            source = io.BytesIO(source)
        return self._defer(self._write, key, offset, source, length)

    def _write(self, key: str, offset: int, source: BinaryIO, length: int) -> None:
        directory = self._dir(key)
        os.makedirs(directory, exist_ok=True)
        path = self.part_path(key)
        created = not os.path.exists(path)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            have = os.fstat(fd).st_size
            if have < offset:
                raise MissingData(key, have, offset)
            if have > offset:
                # What a crash left of a chunk whose count never reached the
                # database: never trusted, cut off before writing.
                log.info(
                    "file {key}: discarding {extra} unacknowledged bytes past {offset}",
                    key=key, extra=have - offset, offset=offset,
                )
                os.ftruncate(fd, offset)
            os.lseek(fd, offset, os.SEEK_SET)
            remaining = length
            while remaining:
                block = source.read(min(COPY_BLOCK, remaining))
                if not block:
                    raise StorageError(f"file {key}: the upload ended {remaining} bytes early")
                view = memoryview(block)
                while view:
                    n = os.write(fd, view)
                    view = view[n:]
                remaining -= len(block)
            # The chunk is acknowledged (by the caller, in the database) only
            # after this returns: the bytes must be on disk first.
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:
            _fsync_dir(directory)

    def finish(self, key: str, size: int) -> Deferred:
        return self._defer(self._finish, key, size)

    def _finish(self, key: str, size: int) -> str:
        directory = self._dir(key)
        os.makedirs(directory, exist_ok=True)
        part, final = self.part_path(key), self.final_path(key)
        if not os.path.exists(part) and os.path.exists(final):
            # Finished before a crash that came ahead of the database update.
            return self._md5(key, final, size)
        # O_CREAT: an empty file has no chunk, so no part file yet.
        fd = os.open(part, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            have = os.fstat(fd).st_size
            if have < size:
                raise MissingData(key, have, size)
            if have > size:
                os.ftruncate(fd, size)
            os.fsync(fd)
        finally:
            os.close(fd)
        digest = self._md5(key, part, size)
        os.replace(part, final)
        _fsync_dir(directory)
        return digest

    def _md5(self, key: str, path: str, size: int) -> str:
        md5 = hashlib.md5()
        with open(path, "rb") as f:
            remaining = size
            while remaining:
                block = f.read(min(COPY_BLOCK, remaining))
                if not block:
                    raise MissingData(key, size - remaining, size)
                md5.update(block)
                remaining -= len(block)
        return md5.hexdigest()

    # -- reading

    def open(self, key: str, offset: int, length: int) -> Deferred:
        if length == 0:
            # Nothing to read: not even a file to open (a client asking for
            # zero bytes only wants the FI header).
            return succeed(RangeProducer(io.BytesIO(b""), key, 0))
        return self._defer(self._open, key, offset, length)

    def _open(self, key: str, offset: int, length: int) -> RangeProducer:
        path = self.final_path(key)
        try:
            f = open(path, "rb")
        except FileNotFoundError:
            raise MissingData(key, 0, offset + length) from None
        try:
            have = os.fstat(f.fileno()).st_size
            if have < offset + length:
                raise MissingData(key, have, offset + length)
            f.seek(offset)
        except BaseException:
            f.close()
            raise
        return RangeProducer(f, key, length)

    def delete(self, key: str) -> Deferred:
        return self._defer(self._delete, key)

    def _delete(self, key: str) -> None:
        for path in (self.part_path(key), self.final_path(key)):
            try:
                os.remove(path)
            except FileNotFoundError:
                pass
