"""The one JSON-object parser: every bad input is the caller's error, saying what is wrong."""

from __future__ import annotations

from twisted.trial import unittest

from imd.channels.shared.jsonobj import parse_object
from imd.errors import BadRequest, InvalidField


class ParseObjectTests(unittest.TestCase):
    def refused(self, raw, says: str, error=BadRequest) -> str:
        with self.assertRaises(error) as caught:
            parse_object(raw, "the body", error)
        self.assertIn(says, str(caught.exception), raw[:20])
        return str(caught.exception)

    def test_objects(self):
        self.assertEqual(parse_object(b'{"a": [1, {"b": "\\u00e9"}]}'), {"a": [1, {"b": "é"}]})
        self.assertEqual(parse_object('{"a":"é"}'), {"a": "é"})
        self.assertEqual(parse_object(bytearray(b'{"n": -5}')), {"n": -5})

    def test_blank_is_an_empty_object(self):
        for raw in (b"", b"  \n", "", memoryview(b" ")):
            self.assertEqual(parse_object(raw), {})

    def test_not_utf8(self):
        self.refused(b'{"a": "\xff"}', "the body is not UTF-8")
        self.refused(b"\xef\xbb\xbf{}", "the body is not")  # a byte-order mark

    def test_lone_surrogates(self):
        # Escaped or raw, a lone surrogate is no Unicode scalar value: it
        # would fail later, when the text is encoded for the store or a frame.
        self.refused(b'{"a": "\\ud800"}', "not JSON")
        self.refused(b'{"a": "x\\udfff"}', "not JSON")
        self.refused('{"a": "\ud800"}', "not UTF-8")
        self.assertEqual(parse_object(b'{"a": "\\ud83d\\ude00"}'), {"a": "😀"})

    def test_numbers_out_of_range(self):
        self.refused(b'{"a": ' + b"9" * 5000 + b"}", "not JSON")
        self.refused(b'{"a": 1e400}', "not JSON")
        for constant in (b"Infinity", b"-Infinity", b"NaN"):
            self.refused(b'{"a": ' + constant + b"}", "not JSON")

    def test_too_deep(self):
        self.refused(b'{"a": ' + b"[" * 5000 + b"]" * 5000 + b"}", "not JSON")

    def test_not_an_object(self):
        for raw in (b"[1, 2]", b'"x"', b"3", b"null", b"true"):
            self.refused(raw, "the body must be a JSON object")

    def test_garbage(self):
        for raw in (b"{nope", b"{", b'{"a":}', b"\x00\x01", b'{"a": 1} x'):
            self.refused(raw, "the body is not JSON: ")

    def test_the_callers_error_and_hint(self):
        with self.assertRaises(InvalidField) as caught:
            parse_object(b"@@", "the frame", InvalidField, " (or was encrypted with another key)")
        self.assertTrue(str(caught.exception).startswith("the frame is not JSON (or was encrypted with another key): "))
        self.assertRaises(ValueError, parse_object, b"[]", "x", ValueError)
