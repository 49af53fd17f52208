# -*- test-case-name: tests.test_files -*-
"""
The file service: every rule about uploaded files, for every channel.

- A file name is one namespace (seed 001): the first uploader owns it, and
  only the owner continues its upload.  Anyone with a token may read a
  complete file.  A complete file never changes: messages and avatars
  refer to it by name, so the bytes behind a name must stay what they were.
- Uploads are resumable: a chunk is accepted only at the offset equal to
  the bytes already stored, never past the declared size, and counts only
  once the storage has it durably.  The upload completes when the last
  byte is stored; its MD5 is computed then, from the stored bytes.
- Limits: C{files.max_size} per file, C{files.max_chunk} per chunk, and a
  per-user C{files.quota} over the declared sizes of the user's files,
  complete or not (an unfinished upload reserves its size).
"""

from __future__ import annotations

import mimetypes
import re
import uuid
from dataclasses import replace
from typing import Any, BinaryIO

from twisted.internet.defer import Deferred, DeferredLock, inlineCallbacks, returnValue
from twisted.logger import Logger
from twisted.python.failure import Failure

from imd.errors import Conflict, Forbidden, IMError, InvalidField, NotFound, TooLarge
from imd.files.storage import MissingData
from imd.store.files import FileRow, NameTaken, QuotaExceeded

log = Logger()

MAX_NAME = 255
# How clients write a reference to a file (seed 001: "avatar": "/file/1.jpg").
REFERENCE_PREFIX = "/file/"
DEFAULT_CONTENT_TYPE = "application/octet-stream"
_DIGITS = re.compile(r"\A[0-9]{1,64}\Z")
_MD5 = re.compile(r"\A[0-9A-Fa-f]{32}\Z")
_CONTENT_TYPE = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*\Z")


class OffsetMismatch(Conflict):
    """The offset is not where the upload stands."""

    code = "offset_mismatch"

    def __init__(self, message: str, stored: int) -> None:
        super().__init__(message)
        #: Where the client must resume.
        self.stored = stored


class AlreadyComplete(Conflict):
    """The file is already complete."""

    code = "already_complete"


class Incomplete(Conflict):
    """The file is not completely uploaded yet."""

    code = "incomplete"


class ChecksumMismatch(Conflict):
    """The MD5 does not match the stored file."""

    code = "md5_mismatch"


class FileTooLarge(TooLarge):
    """The file or chunk is too large."""

    code = "file_too_large"


class QuotaError(TooLarge):
    """The upload would pass the user's quota."""

    code = "quota_exceeded"


class StorageFailure(IMError):
    """The server cannot read or write the file's bytes."""

    code = "storage_error"
    status = 500


def check_name(value: Any, field: str = "filename") -> str:
    """
    A file name: 1-255 characters, none of them a path separator, NUL or
    other control character, and no C{..}.  Names never become paths (the
    storage uses generated ids), but a name travels in URLs, messages and
    client file systems, where these are traps.
    """
    if value is None or value == "":
        raise InvalidField(f"{field} is required")
    if not isinstance(value, str):
        raise InvalidField(f"{field} must be a string")
    if len(value) > MAX_NAME:
        raise InvalidField(f"{field} must be at most {MAX_NAME} characters")
    if "/" in value or "\\" in value:
        raise InvalidField(f"{field} must not contain a path separator (/ or \\)")
    if ".." in value:
        raise InvalidField(f"{field} must not contain ..")
    if any(ord(c) < 32 or 127 <= ord(c) < 160 for c in value):
        raise InvalidField(f"{field} must not contain NUL or other control characters")
    return value


def name_of(reference: Any, field: str = "filename") -> str:
    """A name from a name or a C{/file/<name>} reference."""
    if isinstance(reference, str) and reference.startswith(REFERENCE_PREFIX):
        reference = reference[len(REFERENCE_PREFIX):]
    return check_name(reference, field)


def count(field: str, value: Any, default: int | None = None) -> int | None:
    """
    A byte count or offset: a non-negative integer, as a JSON number or
    decimal digits (form values are text).  C{default} when absent.
    """
    if value is None or value == "":
        if default is None:
            raise InvalidField(f"{field} is required")
        return default
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise InvalidField(f"{field} must be a non-negative integer")
        return value
    if isinstance(value, str) and _DIGITS.match(value):
        return int(value)
    raise InvalidField(f"{field} must be a non-negative integer")


def content_type_for(given: Any, filename: Any = None) -> str:
    """
    C{given} when it is a plain C{type/subtype} (parameters dropped), else
    a guess from C{filename}'s extension, else C{application/octet-stream}.
    """
    if isinstance(given, str):
        given = given.split(";", 1)[0].strip().lower()
        if given and len(given) <= 127 and _CONTENT_TYPE.match(given) and given != DEFAULT_CONTENT_TYPE:
            return given
    if isinstance(filename, str) and filename:
        guessed, _ = mimetypes.guess_type(filename, strict=False)
        if guessed and len(guessed) <= 127:
            return guessed.lower()
    return DEFAULT_CONTENT_TYPE


def _uncancellable(d: Deferred) -> Deferred:
    """
    C{d}'s result, through a Deferred whose cancellation (the client went
    away) does not reach C{d}.  A chunk write runs to its end: cancelling it
    would release the name's lock while a storage thread may still be
    writing the part file, and the client's retry would write beside it.
    """
    outer: Deferred = Deferred(lambda _: None)

    def done(result):
        if not outer.called:
            outer.callback(result)
        elif isinstance(result, Failure):
            # Nobody waits any more; the failure was logged where it matters.
            log.debug("abandoned upload failed: {error}", error=result.value)
        return None

    d.addBoth(done)
    return outer


class FileService:
    def __init__(self, store: Any, storage: Any, config: Any, clock: Any) -> None:
        """
        @param store: the L{imd.store.store.Store} (its C{files}).
        @param storage: an L{imd.files.storage.IFileStorage}.
        @param config: the C{[files]} section.
        @param clock: an C{IReactorTime}.
        """
        self._files = store.files
        self.storage = storage
        self.max_size = config.max_size
        self.max_chunk = config.max_chunk
        self.quota = config.quota
        self.unfinished_ttl = config.unfinished_ttl
        self._clock = clock
        # Uploads of one name run one at a time in this process, so two
        # chunks never write one part file together.  (Instances sharing a
        # database each have their own disk; the database's compare-and-set
        # still refuses a second count of the same offset.)
        self._locks: dict[str, DeferredLock] = {}

    def _now(self) -> int:
        return int(self._clock.seconds() * 1000)

    def _locked(self, name: str, fn, *args):
        lock = self._locks.get(name)
        if lock is None:
            lock = self._locks[name] = DeferredLock()

        def forget(result):
            if not lock.locked and not lock.waiting and self._locks.get(name) is lock:
                del self._locks[name]
            return result

        return lock.run(fn, *args).addBoth(forget)

    # -- uploading

    def upload_chunk(self, uid: str, name: Any, filesize: Any, offset: Any, data: bytes):
        """
        Store C{data} at C{offset} of C{uid}'s file C{name} of C{filesize}
        bytes, starting the upload when C{name} is new; fire with the file's
        row afterwards (C{stored} is where the next chunk starts, and
        C{complete} is true once the last byte is in).  An empty chunk at
        the current offset changes nothing and reports where it stands.
        """
        name = check_name(name)
        size = count("filesize", filesize)
        offset = count("offset", offset)
        # Everything decidable from the request alone is refused before any
        # row exists, so a bad first chunk claims no name and no quota.
        if size > self.max_size:
            raise FileTooLarge(f"filesize {size} is over the limit of {self.max_size} bytes")
        if len(data) > self.max_chunk:
            raise FileTooLarge(f"the chunk of {len(data)} bytes is over the limit of {self.max_chunk} bytes")
        if offset + len(data) > size:
            raise FileTooLarge(
                f"the chunk overruns filesize: offset {offset} + {len(data)} bytes > {size} bytes"
            )
        return _uncancellable(self._locked(name, self._upload_chunk, uid, name, size, offset, data))

    @inlineCallbacks
    def _upload_chunk(self, uid: str, name: str, size: int, offset: int, data: bytes):
        row = yield self._files.by_name(name)
        if row is None:
            if offset != 0:
                raise OffsetMismatch(
                    f"offset {offset} does not match the 0 bytes stored of {name}; resume at offset 0", 0
                )
            row = yield self._create(uid, name, size, content_type_for(None, name))
        else:
            self._check_continuation(uid, row, size, offset)
        if data:
            row = yield self._append(row, data)
        if row.stored == row.size:
            row = yield self._complete(row)
        returnValue(row)

    def _check_continuation(self, uid: str, row: FileRow, size: int, offset: int) -> None:
        if row.owner != uid:
            # Finished or not, a name is its first uploader's.
            raise Forbidden(f"the name {row.name} belongs to another user")
        if row.complete:
            raise AlreadyComplete(f"{row.name} is already complete ({row.size} bytes); a name is uploaded once")
        if size != row.size:
            raise InvalidField(
                f"filesize {size} differs from the {row.size} bytes given when the upload of {row.name} started"
            )
        if offset != row.stored:
            raise OffsetMismatch(
                f"offset {offset} does not match the {row.stored} bytes stored of {row.name};"
                f" resume at offset {row.stored}",
                row.stored,
            )

    @inlineCallbacks
    def _create(self, uid: str, name: str, size: int, content_type: str, id: str | None = None):
        id = id or str(uuid.uuid4())
        try:
            row = yield self._files.create(id, name, uid, size, content_type, self._now(), self.quota)
        except QuotaExceeded as e:
            log.info(
                "{uid} refused {size} bytes over quota ({usage} of {quota} used)",
                uid=uid, size=size, usage=e.usage, quota=e.quota,
            )
            raise QuotaError(
                f"the upload would exceed your quota: {e.usage} of {e.quota} bytes are used,"
                f" {size} more requested"
            ) from None
        except NameTaken as e:
            # Another instance started this name between our look and our insert.
            self._check_continuation(uid, e.existing, size, 0)
            returnValue(e.existing)
        log.info(
            "{uid} started upload {id} of {name} ({size} bytes, {content_type})",
            uid=uid, id=id, name=name, size=size, content_type=content_type,
        )
        returnValue(row)

    @inlineCallbacks
    def _append(self, row: FileRow, source: bytes | BinaryIO, length: int | None = None):
        """Write at C{row.stored}, then count it; the row afterwards."""
        length = len(source) if length is None else length
        offset = row.stored
        try:
            yield self.storage.write(row.id, offset, source, length)
        except MissingData as e:
            yield self._lost(row, e)
        stored = offset + length
        counted = yield self._files.advance(row.id, offset, stored, self._now())
        if not counted:
            # Only another instance writing this name gets here; its count
            # wins and ours is garbage the next write cuts off.
            current = yield self._files.by_id(row.id)
            where = current.stored if current is not None else 0
            raise OffsetMismatch(
                f"offset {offset} does not match the {where} bytes stored of {row.name}; resume at offset {where}",
                where,
            )
        returnValue(replace(row, stored=stored))

    @inlineCallbacks
    def _lost(self, row: FileRow, e: MissingData):
        # The part file lost acknowledged bytes (removed or truncated
        # outside imd).  Count only what is there, so the client re-sends
        # the rest instead of the upload being stuck forever.
        log.error(
            "file {id} ({name}) has {have} of {stored} stored bytes on disk; counting {have}",
            id=row.id, name=row.name, have=e.have, stored=row.stored,
        )
        yield self._files.reset_stored(row.id, row.stored, e.have, self._now())
        raise OffsetMismatch(
            f"the server lost bytes of {row.name} past offset {e.have}; resume at offset {e.have}", e.have
        )

    @inlineCallbacks
    def _complete(self, row: FileRow):
        try:
            md5 = yield self.storage.finish(row.id, row.size)
        except MissingData as e:
            yield self._lost(row, e)
        done = yield self._files.complete(row.id, md5, self._now())
        log.info(
            "{uid} completed upload {id} of {name} ({size} bytes, md5 {md5})",
            uid=row.owner, id=row.id, name=row.name, size=row.size, md5=md5,
        )
        returnValue(done)

    @inlineCallbacks
    def upload_whole(
        self,
        uid: str,
        source: bytes | BinaryIO,
        length: int,
        content_type: Any = None,
        filename: Any = None,
    ):
        """
        Store a whole file at once (seed 002's C{mobileFileUpload}) under a
        new id, which is also its name; fire with its complete row.
        C{source} is bytes or a file positioned at the first byte.
        """
        if length > self.max_size:
            raise FileTooLarge(f"the file of {length} bytes is over the limit of {self.max_size} bytes")
        id = str(uuid.uuid4())
        row = yield self._create(uid, id, length, content_type_for(content_type, filename), id=id)
        try:
            if length:
                row = yield self._append(row, source, length)
            row = yield self._complete(row)
        except BaseException:
            # Nobody knows this id yet: leave no row holding quota.
            yield self._files.delete(row.id)
            yield self.storage.delete(row.id)
            raise
        returnValue(row)

    # -- purging

    @inlineCallbacks
    def purge_unfinished(self, batch: int = 500):
        """
        Delete uploads that no chunk has advanced for C{files.unfinished_ttl}
        seconds, their bytes and the quota they held: fire with how many.
        A chunk that arrives meanwhile wins (the row is deleted only if
        still untouched), and one that arrives after is told to resume at 0.
        """
        if not self.unfinished_ttl:
            returnValue(0)
        before = self._now() - self.unfinished_ttl * 1000
        purged = 0
        while True:
            rows = yield self._files.stale_unfinished(before, batch)
            for row in rows:
                deleted = yield self._locked(row.name, self._purge_one, row, before)
                purged += deleted
            if len(rows) < batch:
                break
        returnValue(purged)

    @inlineCallbacks
    def _purge_one(self, row: FileRow, before: int):
        deleted = yield self._files.delete_stale(row.id, before)
        if deleted:
            yield self.storage.delete(row.id)
            log.info("purged the unfinished upload {name} of {uid} ({stored} of {size} bytes)",
                     name=row.name, uid=row.owner, stored=row.stored, size=row.size)
        returnValue(int(deleted))

    # -- reading

    @inlineCallbacks
    def readable(self, name: str):
        """The complete file C{name}, which anyone with a token may read."""
        row = yield self._files.by_name(name)
        if row is None:
            raise NotFound(f"no file named {name}")
        if not row.complete:
            raise Incomplete(f"{name} is not completely uploaded: {row.stored} of {row.size} bytes stored")
        returnValue(row)

    @inlineCallbacks
    def download(self, name: Any, offset: Any = None, block_size: Any = None, references: bool = False):
        """
        C{block-size} bytes (all the rest when absent, fewer at the end) of
        file C{name} from C{offset}: fire with (row, producer).  With
        C{references}, C{name} may also be a C{/file/<name>} reference.
        """
        start = count("offset", offset, default=0)
        # A block-size past the end reads to the end; it is a window, not a promise.
        block = count("block-size", block_size, default=-1)
        row = yield self.find(name, references)
        if start > row.size:
            raise InvalidField(f"offset {start} is past the end of {name} ({row.size} bytes)")
        rest = row.size - start
        length = rest if block < 0 else min(block, rest)
        producer = yield self.open(row, start, length)
        returnValue((row, producer))

    def find(self, name: Any, references: bool = False) -> "Deferred[FileRow]":
        """The complete file C{name}; with C{references}, C{/file/<name>} names it too."""
        return self.readable(name_of(name) if references else check_name(name))

    @inlineCallbacks
    def by_file_id(self, file_id: Any):
        """
        A complete file by seed 002's C{fileId}: the id C{mobileFileUpload}
        gave, or the name of a file uploaded through the seed 001 API.
        """
        if not isinstance(file_id, str) or not file_id:
            raise InvalidField("fileId is required")
        row = None
        if len(file_id) <= 64:
            row = yield self._files.by_id(file_id)
        if row is None:
            row = yield self.readable(name_of(file_id, "fileId"))
        elif not row.complete:
            raise Incomplete(f"{file_id} is not completely uploaded: {row.stored} of {row.size} bytes stored")
        returnValue(row)

    @inlineCallbacks
    def open(self, row: FileRow, offset: int = 0, length: int | None = None):
        """A producer of C{length} bytes (default: the rest) of C{row} from C{offset}."""
        length = row.size - offset if length is None else length
        try:
            producer = yield self.storage.open(row.id, offset, length)
        except MissingData as e:
            log.error(
                "file {id} ({name}) is complete in the database but has {have} of {size} bytes on disk",
                id=row.id, name=row.name, have=e.have, size=row.size,
            )
            raise StorageFailure(f"the bytes of {row.name} are missing on the server") from None
        returnValue(producer)

    @inlineCallbacks
    def check_md5(self, name: Any, md5: Any):
        """The complete file C{name} if C{md5} is its MD5 (any case); raise if not."""
        name = check_name(name)
        if md5 is None or md5 == "":
            raise InvalidField("md5 is required")
        if not isinstance(md5, str) or not _MD5.match(md5):
            raise InvalidField("md5 must be 32 hexadecimal digits")
        row = yield self.readable(name)
        if row.md5 != md5.lower():
            raise ChecksumMismatch(f"md5 {md5} does not match {name}, whose md5 is {row.md5}")
        returnValue(row)

    @inlineCallbacks
    def check_avatar(self, avatar: Any):
        """
        Refuse an avatar that is not an uploaded, complete file, given as
        C{name} or C{/file/name}.  An empty avatar (none) is fine.  Anyone's
        file may be an avatar: every file is readable by every user anyway.
        """
        if avatar is None or avatar == "":
            return
        name = name_of(avatar, "avatar")
        row = yield self._files.by_name(name)
        if row is None:
            raise InvalidField(f"avatar must be an uploaded file: there is no file named {name}")
        if not row.complete:
            raise InvalidField(
                f"avatar must be a complete file: {name} has {row.stored} of {row.size} bytes"
            )
