"""imd.channels.shared.ranges: what a Range header selects."""

from twisted.trial import unittest

from imd.channels.shared.ranges import Unsatisfiable, content_range, parse, unsatisfied_range
from tests.fuzzing import rng as seeded_rng


class RangeTests(unittest.TestCase):
    def test_forms(self):
        for header, window in [
            (b"bytes=0-4", (0, 5)),
            (b"bytes=5-", (5, 5)),
            (b"bytes=-3", (7, 3)),
            (b"bytes=-30", (0, 10)),        # a suffix longer than the file: all of it
            (b"bytes=8-100", (8, 2)),       # an end past the end is cut
            (b"bytes=9-9", (9, 1)),
            ("Bytes = 2-3", (2, 2)),
        ]:
            self.assertEqual(parse(header, 10), window, header)

    def test_ignored(self):
        """Not valid bytes syntax, or several ranges: the whole file."""
        for header in (None, b"", b"bytes", b"bytes=", b"bytes=-", b"items=0-1", b"bytes=0-1,3-4",
                       b"bytes=5-2", b"bytes=a-b", b"bytes=0x1-2", b"bytes=1 - 2", b"bytes=\xff-1",
                       b"bytes=" + b"9" * 20 + b"-", b"bytes=+1-2"):
            self.assertIsNone(parse(header, 10), header)

    def test_unsatisfiable(self):
        for header, size in ((b"bytes=10-", 10), (b"bytes=10-20", 10), (b"bytes=-0", 10), (b"bytes=0-", 0),
                             (b"bytes=-5", 0)):
            self.assertRaises(Unsatisfiable, parse, header, size)

    def test_header_values(self):
        self.assertEqual(content_range(7, 3, 10), b"bytes 7-9/10")
        self.assertEqual(unsatisfied_range(10), b"bytes */10")

    def test_garbage_never_raises_anything_else(self):
        rng = seeded_rng("ranges")
        for _ in range(2000):
            header = b"bytes=" + bytes(rng.randrange(256) for _ in range(rng.randrange(12)))
            try:
                window = parse(header, 100)
            except Unsatisfiable:
                continue
            if window is not None:
                start, length = window
                self.assertTrue(0 <= start < 100 and 0 < length <= 100 - start, (header, window))
