"""Length-prefixed frames, as both TCP channels and their clients cut them."""

from __future__ import annotations

import struct

from twisted.trial import unittest

from imd.channels.shared.frames import FrameError, LengthPrefixed

U16 = struct.Struct(">H")
U32 = struct.Struct(">I")


class LengthPrefixedTests(unittest.TestCase):
    def test_frames_split_and_joined_anyhow(self):
        stream = U16.pack(3) + b"abc" + U16.pack(0) + U16.pack(2) + b"de"
        for size in (1, 2, 3, len(stream)):
            decoder = LengthPrefixed(U16, 10)
            got = []
            for i in range(0, len(stream), size):
                got += decoder.feed(stream[i : i + size])
            self.assertEqual(got, [b"abc", b"", b"de"], size)

    def test_waits_for_the_rest(self):
        decoder = LengthPrefixed(U32, 100)
        self.assertEqual(decoder.feed(U32.pack(5) + b"ab"), [])
        self.assertEqual(decoder.feed(b"c"), [])
        self.assertEqual(decoder.feed(b"de" + U32.pack(1)), [b"abcde"])
        self.assertEqual(decoder.feed(b"z"), [b"z"])

    def test_hostile_lengths_refused_before_buffering(self):
        decoder = LengthPrefixed(U32, 100)
        with self.assertRaises(FrameError) as caught:
            decoder.feed(U32.pack(0xFFFFFFFF))
        self.assertIn("over the 100 byte limit", str(caught.exception))
        with self.assertRaises(FrameError) as caught:
            LengthPrefixed(U32, 100, min_length=4).feed(U32.pack(3) + b"abc")
        self.assertIn("under 4", str(caught.exception))

    def test_the_limit_itself_is_allowed(self):
        self.assertEqual(LengthPrefixed(U16, 4).feed(U16.pack(4) + b"wxyz"), [b"wxyz"])
