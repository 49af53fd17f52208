# -*- test-case-name: tests.test_xmpp_codec -*-
"""
The XML stream of one XMPP connection (RFC 6120 section 4), cut into the
stream header, one element per top-level stanza, and the stream's end.

Parsed incrementally by expat (the stdlib's maintained parser) under
XMPP's restricted XML (RFC 6120 section 11.1): no DTD, so no entity can
be declared or expanded and nothing external is read; no comments or
processing instructions.  Depth and the size of each stanza are bounded,
so a hostile client cannot make the server hold more than one stanza's
worth of its bytes.  Anything else ends that stream with a stream error.
"""

from __future__ import annotations

from typing import Any
from xml.parsers import expat

from twisted.words.xish import domish

NS_STREAMS = "http://etherx.jabber.org/streams"
NS_CLIENT = "jabber:client"
NS_XML = "http://www.w3.org/XML/1998/namespace"
# Elements inside a stanza: a real stanza nests a handful deep.
MAX_DEPTH = 32


class StreamError(Exception):
    """The stream cannot go on: C{condition} is the RFC 6120 stream error."""

    def __init__(self, condition: str, text: str = "") -> None:
        super().__init__(text or condition)
        self.condition = condition
        self.text = text


class StreamStart:
    """The client opened (or restarted) its stream: C{attrs} of its header."""

    def __init__(self, attrs: dict[str, str]) -> None:
        self.attrs = attrs


class StreamEnd:
    """The client closed its stream."""


def _qname(name: str) -> tuple[str, str]:
    uri, _, local = name.rpartition(" ")
    return uri, local


class StreamParser:
    """
    C{feed(data)} returns what the bytes completed: a L{StreamStart}, one
    C{domish.Element} per stanza, a L{StreamEnd}; it raises L{StreamError}
    for anything XMPP does not allow.  L{reset} starts a new stream (after
    STARTTLS and SASL the client opens a new one).
    """

    def __init__(self, max_stanza: int, max_depth: int = MAX_DEPTH) -> None:
        self.max_stanza = max_stanza
        self.max_depth = max_depth
        self.reset()

    def reset(self) -> None:
        parser = expat.ParserCreate("UTF-8", " ")
        # Nothing outside the document is ever read, not even a DTD subset.
        parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
        parser.buffer_text = True
        parser.ordered_attributes = False
        parser.StartElementHandler = self._start
        parser.EndElementHandler = self._end
        parser.CharacterDataHandler = self._text
        parser.StartDoctypeDeclHandler = self._refuse("a DTD")
        parser.EntityDeclHandler = self._refuse("an entity declaration")
        parser.CommentHandler = self._refuse("a comment")
        parser.ProcessingInstructionHandler = self._refuse("a processing instruction")
        parser.ExternalEntityRefHandler = self._refuse("an external entity")
        self._parser = parser
        self._depth = 0
        self._current: domish.Element | None = None
        self._out: list[Any] = []
        self._fed = 0
        self._stanza_start: int | None = None

    @staticmethod
    def _refuse(what: str):
        def refuse(*_: Any) -> None:
            raise StreamError("restricted-xml", f"{what} is not allowed in XMPP")

        return refuse

    def feed(self, data: bytes) -> list[Any]:
        try:
            self._parser.Parse(data, False)
        except expat.ExpatError as e:
            raise StreamError("not-well-formed", expat.errors.messages[e.code]) from None
        self._fed += len(data)
        self._check_size(self._fed)
        out, self._out = self._out, []
        return out

    def _check_size(self, position: int) -> None:
        if self._stanza_start is not None and position - self._stanza_start > self.max_stanza:
            raise StreamError("policy-violation", f"a stanza is limited to {self.max_stanza} bytes")

    def _start(self, name: str, attrs: dict[str, str]) -> None:
        uri, local = _qname(name)
        if self._depth == 0:
            if (uri, local) != (NS_STREAMS, "stream"):
                raise StreamError("invalid-namespace", "the stream must open with <stream:stream>")
            self._depth = 1
            self._out.append(StreamStart({_qname(k)[1] if _qname(k)[0] in ("", NS_XML) else k: v for k, v in attrs.items()}))
            return
        if self._depth >= self.max_depth:
            raise StreamError("policy-violation", f"elements nest at most {self.max_depth} deep")
        if self._depth == 1:
            self._stanza_start = self._parser.CurrentByteIndex
        else:
            self._check_size(self._parser.CurrentByteIndex)
        element = domish.Element((uri, local))
        for key, value in attrs.items():
            kuri, klocal = _qname(key)
            element[(kuri, klocal) if kuri else klocal] = value
        if self._current is not None:
            self._current.addChild(element)
        self._current = element
        self._depth += 1

    def _end(self, name: str) -> None:
        self._depth -= 1
        if self._depth == 0:
            self._out.append(StreamEnd())
            return
        element = self._current
        self._current = element.parent
        if self._depth == 1:
            # A top-level stanza stands alone: its parent is the stream.
            element.parent = None
            self._stanza_start = None
            self._out.append(element)

    def _text(self, data: str) -> None:
        if self._current is not None:
            self._current.addContent(data)
        elif data.strip():
            raise StreamError("not-well-formed", "text outside a stanza")
