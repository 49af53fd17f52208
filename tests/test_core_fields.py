"""Checks of client values that every channel shares."""

from __future__ import annotations

from twisted.trial import unittest

from imd.core import fields
from imd.errors import InvalidField


class FieldsTests(unittest.TestCase):
    def test_digits_are_ascii(self):
        self.assertTrue(fields.digits("0123456789"))
        for value in ("", "²", "٣", "1²", " 1", "-1", "1.0", "１"):
            self.assertFalse(fields.digits(value), value)

    def test_integer(self):
        self.assertEqual(fields.integer("seq", "42"), 42)
        self.assertEqual(fields.integer("seq", 42), 42)
        self.assertEqual(fields.integer("w", "-3", minimum=-5), -3)
        for value in ("²", "٣", "9" * 5000, 2**62, -1, "-1", True, 1.5, None, "", "1e3", [1]):
            with self.assertRaises(InvalidField):
                fields.integer("seq", value)
        with self.assertRaises(InvalidField):
            fields.integer("w", 2**31, -(2**31), 2**31 - 1)
