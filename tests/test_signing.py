"""Tests for L{imd.channels.shared.signing}: the MD5 signature of seed 004 and seed 001's file server."""

from __future__ import annotations

import hashlib

from twisted.trial import unittest

from imd.channels.shared.signing import matches, sign, signed_string


class SignTests(unittest.TestCase):
    def test_seed_004_worked_example(self) -> None:
        # Seed 004's own example: the keys ascending, time appended.
        params = {"telephone": "13244556677", "sms_code": "123456", "password": "123456"}
        self.assertEqual(
            signed_string(params, "1495363260"),
            "password=123456&sms_code=123456&telephone=13244556677&time=1495363260",
        )
        self.assertEqual(sign(params, "1495363260"), "05391105E5EB97BF6CC9DA9F7F939E4C")

    def test_without_time(self) -> None:
        # The file server signs without a time: nothing is appended.
        params = {"token": "t0k", "filename": "a.jpg", "offset": "0", "filesize": "10"}
        self.assertEqual(signed_string(params), "filename=a.jpg&filesize=10&offset=0&token=t0k")
        self.assertEqual(
            sign(params),
            hashlib.md5(b"filename=a.jpg&filesize=10&offset=0&token=t0k").hexdigest().upper(),
        )

    def test_time_alone(self) -> None:
        self.assertEqual(signed_string({}, "1"), "time=1")
        self.assertEqual(signed_string({}), "")

    def test_time_goes_last_whatever_it_sorts_as(self) -> None:
        self.assertEqual(signed_string({"uid": "a", "zz": "b"}, "9"), "uid=a&zz=b&time=9")

    def test_values_as_strings(self) -> None:
        # A JSON number signs like the string a form would carry.
        self.assertEqual(sign({"offset": 5, "filesize": 10}), sign({"offset": "5", "filesize": "10"}))
        self.assertEqual(signed_string({"a": True, "b": None, "c": 1.5}), "a=true&b=null&c=1.5")

    def test_nested_values_as_compact_json(self) -> None:
        self.assertEqual(
            signed_string({"data": {"b": [1, 2], "a": "é"}}), 'data={"b":[1,2],"a":"é"}'
        )

    def test_utf8(self) -> None:
        self.assertEqual(
            sign({"filename": "头像.jpg"}), hashlib.md5("filename=头像.jpg".encode()).hexdigest().upper()
        )

    def test_matches_is_case_insensitive(self) -> None:
        params = {"filename": "a"}
        self.assertTrue(matches(sign(params), params))
        self.assertTrue(matches(sign(params).lower(), params))
        self.assertFalse(matches(sign({"filename": "b"}), params))
        self.assertFalse(matches("", params))
        self.assertFalse(matches(None, params))
        self.assertFalse(matches("签名", params))
        self.assertTrue(matches(sign(params, "7"), params, "7"))
        self.assertFalse(matches(sign(params), params, "7"))
