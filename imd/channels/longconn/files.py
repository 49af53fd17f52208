# -*- test-case-name: tests.test_files,tests.test_web -*-
"""
The file server on the HTTP listener (docs/files.rst).

Seed 001: ``/file/upload`` (base64 chunks, resumable by offset),
``/file/download`` and ``/file/download/head`` (ranges by ``offset`` and
``block-size``, total size in the ``FI`` header), ``/file/check`` (MD5),
every request signed.  Seed 002: ``/upload/mobileFileUpload`` (multipart)
answers a ``fileId`` that ``/upload/mobileFileDownload`` serves.

Errors on these routes are the seeds', not the JSON form of the other
APIs: status 500 and a plain-text description.  Downloads stream through a
producer, so memory does not grow with the file.  Upload bodies are parsed
here, bounded, rather than by twisted.web (see L{UploadRequest}).
"""

from __future__ import annotations

import base64
import binascii
import math
from dataclasses import dataclass
from email.message import Message
from email.parser import BytesHeaderParser
from email.utils import collapse_rfc2231_value
from typing import TYPE_CHECKING, Any, BinaryIO
from urllib.parse import parse_qsl

from twisted.internet.defer import CancelledError, inlineCallbacks, returnValue
from twisted.logger import Logger

from imd.channels.shared import ranges, signing
from imd.channels.shared.jsonobj import parse_object
from imd.core.files import FileTooLarge, OffsetMismatch
from imd.errors import IMError, InvalidField, Unauthenticated
from imd.files.storage import ConsumerGone
from imd.channels.shared.httpjson import write_json
from imd.channels.shared.web import Family

if TYPE_CHECKING:
    from imd.server import Server

log = Logger()

# Room for everything around the file bytes in an upload body: the other
# form fields, multipart headers and boundaries.
BODY_OVERHEAD = 65_536
# Multipart limits: a part's header block, and parts per body.
MAX_PART_HEADER = 16_384
MAX_PARTS = 64
SEED001_CONTENT_TYPE = b"application/octet-stream;charset=utf-8"


def _spell_fi_as_the_seed_does() -> None:
    """
    Header names are case-insensitive, but twisted.web writes C{FI} as
    C{Fi}, and a client that looks the seed's C{FI} up in a plain
    dictionary (older iOS code does) would miss it.  twisted.web keeps a
    table of unconventional spellings (C{ETag}, C{DNT}); C{FI} joins it.
    Without that table (another Twisted) the header is merely C{Fi}.
    """
    try:
        from twisted.web.http_headers import _NameEncoder

        _NameEncoder._caseMappings.setdefault(b"Fi", b"FI")
    except (ImportError, AttributeError):
        log.info("cannot spell the FI header in capitals with this Twisted; sending Fi")


_spell_fi_as_the_seed_does()


# -- reading parameters


def _content_type(request) -> tuple[str, Message]:
    raw = request.getHeader(b"content-type")
    header = Message()
    header["content-type"] = (raw or b"").decode("latin-1")
    return (header.get_content_type() if raw else ""), header


def _body_size(request) -> int:
    content = request.content
    if content is None:
        return 0
    content.seek(0, 2)
    size = content.tell()
    content.seek(0)
    return size


def _check_body(request, limit: int) -> int:
    size = _body_size(request)
    if size > limit:
        raise FileTooLarge(f"the request body of {size} bytes is over the limit of {limit} bytes")
    return size


def _text(value: bytes, key: str) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidField(f"parameter {key} is not UTF-8") from None


class Params(dict):
    """Request parameters by name; a name given twice is refused."""

    def add(self, key: str, value: Any) -> None:
        if key in self:
            raise InvalidField(f"parameter {key} is given more than once")
        self[key] = value


def _add_pairs(params: Params, pairs) -> None:
    for key, value in pairs:
        k = _text(key, "name") if isinstance(key, bytes) else key
        params.add(k, _text(value, k) if isinstance(value, bytes) else value)


def _add_json(params: Params, raw: bytes) -> None:
    _add_pairs(params, parse_object(raw, "the body", InvalidField).items())


MAX_FIELDS = 100


def _pairs(raw: bytes, what: str) -> list[tuple[str, str]]:
    # Decoded here, strictly: given bytes, parse_qsl reads them as ASCII
    # and so refuses every percent-escaped non-ASCII value (a Chinese file
    # name) as if it were malformed.
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidField(f"the {what} is not UTF-8") from None
    if text.count("&") >= MAX_FIELDS:
        raise InvalidField(f"the {what} has more than {MAX_FIELDS} parameters")
    try:
        return parse_qsl(text, keep_blank_values=True, encoding="utf-8", errors="strict")
    except UnicodeDecodeError:
        raise InvalidField(f"a parameter of the {what} is not UTF-8") from None


def read_params(
    request, limit: int, file_fields: frozenset[str] = frozenset(), max_field: int | None = None
) -> tuple[Params, list["Part"]]:
    """
    The parameters of a request, from its query string and its body (form,
    multipart or JSON, at most C{limit} bytes), and its multipart file
    parts: those with a filename or named in C{file_fields}, whose bytes
    stay in C{request.content}.  Other parts are parameters of at most
    C{max_field} bytes.

    C{request.args} is not used: twisted.web leaves upload bodies unparsed
    (L{imd.channels.shared.request.ImdRequest}), and reading every body here gives every route the
    same rules (size limit, a name given twice refused) either way.
    """
    params = Params()
    parts: list[Part] = []
    _, _, query = request.uri.partition(b"?")
    if query:
        _add_pairs(params, _pairs(query, "query string"))
    size = _check_body(request, limit)
    if not size:
        return params, parts
    kind, header = _content_type(request)
    if kind == "multipart/form-data":
        for part in parse_multipart(request.content, size, header):
            if part.filename is not None or part.name in file_fields:
                parts.append(part)
                continue
            if max_field is not None and part.length > max_field:
                raise InvalidField(f"parameter {part.name} is longer than {max_field} bytes")
            params.add(part.name, _text(part.read(request.content), part.name))
        return params, parts
    raw = request.content.read(size)
    request.content.seek(0)
    if kind == "application/x-www-form-urlencoded":
        _add_pairs(params, _pairs(raw, "form"))
    elif raw.strip():
        # JSON: declared so, or undeclared (clients forget the header).
        _add_json(params, raw)
    return params, parts


# -- multipart


@dataclass(frozen=True)
class Part:
    """One part of a multipart body: its bytes are C{length} bytes at C{start} of the body file."""

    name: str
    filename: str | None
    content_type: str | None
    start: int
    length: int

    def read(self, f: BinaryIO) -> bytes:
        f.seek(self.start)
        data = f.read(self.length)
        f.seek(0)
        return data


def _find_all(f: BinaryIO, needle: bytes, limit: int) -> list[int]:
    """Offsets of C{needle} in C{f}, read in blocks (never whole); at most C{limit}."""
    found: list[int] = []
    f.seek(0)
    base, buf = 0, b""
    while True:
        block = f.read(1 << 16)
        if not block:
            return found
        buf += block
        i = 0
        while (j := buf.find(needle, i)) >= 0:
            found.append(base + j)
            if len(found) > limit:
                raise InvalidField(f"the multipart body has more than {MAX_PARTS} parts")
            i = j + len(needle)
        # Keep a tail that may hold the start of the next needle.
        cut = max(len(buf) - (len(needle) - 1), i)
        base += cut
        buf = buf[cut:]


def parse_multipart(f: BinaryIO, size: int, header: Message) -> list[Part]:
    """
    The parts of the multipart/form-data body in C{f} (RFC 7578), found by
    scanning for the boundary block by block, so a file part of any size
    is never read into memory.  A body without its closing delimiter (a
    truncated upload) is refused, never stored short.
    """
    boundary = header.get_param("boundary")
    if isinstance(boundary, tuple):
        boundary = collapse_rfc2231_value(boundary)
    if not boundary or len(boundary) > 70:
        raise InvalidField("the multipart body needs a boundary of 1-70 characters")
    delimiter = b"--" + boundary.encode("latin-1")
    f.seek(0)
    starts = [0] if f.read(len(delimiter)) == delimiter else []
    starts += [p + 2 for p in _find_all(f, b"\r\n" + delimiter, MAX_PARTS + 1)]
    parts: list[Part] = []
    closed = False
    for i, start in enumerate(starts):
        after = start + len(delimiter)
        f.seek(after)
        line = f.read(MAX_PART_HEADER)
        if line.startswith(b"--"):
            closed = True
            break
        if i + 1 == len(starts):
            break
        eol = line.find(b"\r\n")
        if eol < 0 or line[:eol].strip(b" \t"):
            raise InvalidField("the multipart body is malformed: a boundary line has trailing text")
        headers_start = after + eol + 2
        # The CRLF before the next delimiter belongs to the delimiter.
        body_end = starts[i + 1] - 2
        f.seek(headers_start)
        block = f.read(min(MAX_PART_HEADER, max(body_end - headers_start, 0) + 2))
        if block.startswith(b"\r\n"):
            raw_headers, body_start = b"", headers_start + 2
        else:
            end = block.find(b"\r\n\r\n")
            if end < 0:
                raise InvalidField("the multipart body is malformed: a part's headers do not end")
            raw_headers, body_start = block[:end], headers_start + end + 4
        if body_start > body_end:
            raise InvalidField("the multipart body is malformed: a part ends inside its headers")
        headers = BytesHeaderParser().parsebytes(raw_headers + b"\r\n\r\n")
        name = headers.get_param("name", header="content-disposition")
        filename = headers.get_param("filename", header="content-disposition")
        name = collapse_rfc2231_value(name) if name else None
        if not name:
            continue  # as twisted.web: a part without a name is no parameter
        parts.append(
            Part(
                name=name,
                filename=collapse_rfc2231_value(filename) if filename is not None else None,
                content_type=headers.get("content-type"),
                start=body_start,
                length=body_end - body_start,
            )
        )
    if not closed:
        raise InvalidField("the multipart body is truncated: its closing boundary is missing")
    f.seek(0)
    return parts


def decode_bin(text: Any) -> bytes:
    """
    The base64 chunk of C{/file/upload}.  Line breaks (Android's and
    MIME encoders' default) are dropped, a space is taken for the C{+} that
    an unencoded form turns into one, and the URL-safe alphabet is
    accepted; anything else that is not base64 is refused, never guessed.
    """
    if text is None:
        raise InvalidField("bin is required")
    if not isinstance(text, str):
        raise InvalidField("bin must be a base64 string")
    cleaned = text.translate({ord("\r"): None, ord("\n"): None, ord(" "): "+", ord("-"): "+", ord("_"): "/"})
    try:
        return base64.b64decode(cleaned.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise InvalidField("bin is not valid base64") from None


# -- answers


def _plain(request, message: str, code: int = 200) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
    request.setHeader(b"Cache-Control", b"no-store")
    return message.encode("utf-8")


def body_limits(config: Any) -> tuple[int, int]:
    """(chunked upload, whole-file upload) body limits, in bytes."""
    # A base64 chunk of files.max_chunk bytes, even with every character
    # percent-encoded in a form, plus the other fields.
    return 3 * 4 * math.ceil(config.max_chunk / 3) + BODY_OVERHEAD, config.max_size + BODY_OVERHEAD


def seed_error(request, error: IMError) -> bytes:
    """
    The seeds' error form: 500 and the message as plain text; an offset
    mismatch also says where to resume, in the C{Stored} header.
    """
    # Every failure here is a 500, so an access log cannot tell a refused
    # upload from a broken server; this line can.
    log.debug(
        "{method} {path}: {code}: {message}",
        method=request.method, path=request.path, code=error.code, message=error.message,
    )
    if isinstance(error, OffsetMismatch):
        request.setHeader(b"Stored", str(error.stored).encode("ascii"))
    return _plain(request, error.message, 500)


def make_app(server: "Server") -> Family:
    family = Family("files", server.metrics, seed_error, prefixes=("/file/", "/upload/"))
    app = family.app
    config = server.config.files
    upload_limit, whole_limit = body_limits(config)
    query_limit = server.config.http.max_body

    def body_limit(path: str) -> int:
        if path == "/file/upload":
            return upload_limit
        if path.endswith("/upload/mobileFileUpload"):
            return whole_limit
        return query_limit

    family.body_limit = body_limit

    @inlineCallbacks
    def signed(request, limit: int):
        """Parameters of a seed 001 request whose signature and token are good, and its user."""
        params, parts = read_params(request, limit)
        signature = params.get("signature")
        if signature is None or signature == "":
            raise InvalidField("signature is required")
        covered = {k: v for k, v in params.items() if k not in ("bin", "signature")}
        if not signing.matches(signature, covered):
            raise InvalidField("signature does not match the parameters")
        token = params.get("token")
        if token is None or token == "":
            raise Unauthenticated("token is required")
        uid = yield server.accounts.authenticate(token)
        returnValue((uid, params, parts))

    @inlineCallbacks
    def serve(request, row, content_type: bytes):
        """
        The complete file C{row}: the whole (200), or the one byte range a
        C{Range} header asks for (206), or 416 for a range past its end.
        """
        request.setHeader(b"Accept-Ranges", b"bytes")
        etag = f'"{row.md5}"'.encode("ascii") if row.md5 else None
        if etag:
            request.setHeader(b"ETag", etag)
        # A client resuming with If-Range gets the range only if the file is
        # the one it has the start of; the MD5 names its bytes.
        if_range = request.getHeader(b"if-range")
        wanted = request.getHeader(b"range") if if_range is None or if_range == etag else None
        try:
            window = ranges.parse(wanted, row.size)
        except ranges.Unsatisfiable:
            request.setHeader(b"Content-Range", ranges.unsatisfied_range(row.size))
            returnValue(_plain(request, f"range not satisfiable: {row.name} has {row.size} bytes", 416))
        code, (start, length) = (200, (0, row.size)) if window is None else (206, window)
        if code == 206:
            request.setHeader(b"Content-Range", ranges.content_range(start, length, row.size))
        producer = yield server.files.open(row, start, length)
        result = yield stream(request, producer, content_type, row.size, code)
        returnValue(result)

    @inlineCallbacks
    def stream(request, producer, content_type: bytes, total: int, code: int = 200):
        """Send a producer's bytes with the seed's headers."""
        request.setResponseCode(code)
        request.setHeader(b"Content-Type", content_type)
        request.setHeader(b"Content-Length", str(producer.length).encode("ascii"))
        request.setHeader(b"FI", str(total).encode("ascii"))
        finished = request.notifyFinish()
        try:
            yield producer.send(request)
        except ConsumerGone:
            # The transport stopped us because the client went away; the
            # request hears of it next.  Waiting for that (Klein then
            # cancels us) keeps Klein from answering a closed connection.
            yield finished
        except CancelledError:
            raise
        except Exception:
            # The headers are out: too late for a 500.  Cutting the
            # connection short of Content-Length tells the client.
            log.failure("sending {path}", path=request.path)
            request.loseConnection()
        returnValue(b"")

    # Endpoints are named explicitly: Klein keys routes by endpoint name,
    # which defaults to the function's name, and both download routes'
    # functions are named download.
    @app.route("/file/upload", methods=["POST"], endpoint="files.upload")
    @inlineCallbacks
    def upload(request):
        uid, params, parts = yield signed(request, upload_limit)
        if parts:
            raise InvalidField("bin must be a base64 form field, not a file part")
        data = decode_bin(params.get("bin"))
        row = yield server.files.upload_chunk(
            uid, params.get("filename"), params.get("filesize"), params.get("offset"), data
        )
        request.setHeader(b"Stored", str(row.stored).encode("ascii"))
        returnValue(_plain(request, str(row.stored)))

    def download_route(path: str, references: bool):
        @app.route(path, methods=["GET", "POST"], endpoint="files" + path)
        @inlineCallbacks
        def download(request):
            _uid, params, _parts = yield signed(request, query_limit)
            if params.get("offset") is None and params.get("block-size") is None:
                # No window of the seed's: HTTP's own Range header may ask for one.
                row = yield server.files.find(params.get("filename"), references)
                result = yield serve(request, row, SEED001_CONTENT_TYPE)
                returnValue(result)
            row, producer = yield server.files.download(
                params.get("filename"), params.get("offset"), params.get("block-size"), references
            )
            result = yield stream(request, producer, SEED001_CONTENT_TYPE, row.size)
            returnValue(result)

    download_route("/file/download", references=False)
    # Avatars: the value a client set as its avatar ("/file/1.jpg") is
    # accepted as the filename too.
    download_route("/file/download/head", references=True)

    @app.route("/file/check", methods=["GET", "POST"], endpoint="files.check")
    @inlineCallbacks
    def check(request):
        _uid, params, _parts = yield signed(request, query_limit)
        yield server.files.check_md5(params.get("filename"), params.get("md5"))
        returnValue(_plain(request, "ok"))

    @inlineCallbacks
    def seed002_user(request, params: dict):
        """Seed 002 names no credential: a Bearer token or a C{token} parameter."""
        token = params.get("token")
        if token is None or token == "":
            header = request.getHeader(b"authorization")
            scheme, _, value = (header or b"").decode("latin-1").strip().partition(" ")
            token = value.strip() if scheme.lower() == "bearer" else None
        if not token:
            raise Unauthenticated("a token is required: an Authorization: Bearer header or a token parameter")
        uid = yield server.accounts.authenticate(token)
        returnValue(uid)

    @inlineCallbacks
    def mobile_upload(request, project=None):
        params, parts = read_params(request, whole_limit, frozenset({"file"}), BODY_OVERHEAD)
        uid = yield seed002_user(request, params)
        files = [p for p in parts if p.name == "file"] or parts
        if not files:
            raise InvalidField('a multipart body with the file in a part named "file" is required')
        if len(files) > 1:
            raise InvalidField("one file per upload")
        [part] = files
        request.content.seek(part.start)
        row = yield server.files.upload_whole(uid, request.content, part.length, part.content_type, part.filename)
        returnValue(write_json(request, {"fileId": row.id}))

    @inlineCallbacks
    def mobile_download(request, project=None):
        params, _parts = read_params(request, query_limit)
        yield seed002_user(request, params)
        row = yield server.files.by_file_id(params.get("fileId"))
        result = yield serve(request, row, row.content_type.encode("ascii"))
        returnValue(result)

    # Seed 002 writes these under http://ip:port/projectName/upload/…: the
    # project name is any one path segment, or none.
    for prefix in ("", "/<string:project>"):
        app.route(prefix + "/upload/mobileFileUpload", methods=["POST"], endpoint="files.mobile_upload" + prefix)(
            mobile_upload
        )
        app.route(
            prefix + "/upload/mobileFileDownload", methods=["GET", "POST"], endpoint="files.mobile_download" + prefix
        )(mobile_download)
    return family
