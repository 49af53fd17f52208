"""Seed 002's envelope: what a client sends, read; what the server writes."""

import json
import random

from twisted.trial import unittest

from imd.channels.xmpp import envelope as E
from imd.channels.xmpp.envelope import EnvelopeError, parse


def doc(msg_type, body, **extra):
    d = dict(E.HEADER, **{"from": "rose", "msg_id": "m1", "msg_type": msg_type, "msg_time": "1599218283837", "body": body})
    d.update(extra)
    return json.dumps(d)


class ParseTests(unittest.TestCase):
    def test_sends(self):
        r = parse(doc("MTT-000", [{"text": "hi"}], to="jack"))
        self.assertEqual((r.action, r.msgid, r.to, r.gid, r.kind, r.content, r.client_time), ("send", "m1", "jack", None, "text", "hi", "1599218283837"))
        for code, kind in (("001", "image"), ("002", "file"), ("003", "voice")):
            r = parse(doc(f"MTT-{code}", [{"file_id": "f"}], msg_to="jack"))
            self.assertEqual((r.kind, r.content, r.to), (kind, "f", "jack"))
            r = parse(doc(f"MTS-{code}", [{"file_id": "f", "session_id": "g1"}]))
            self.assertEqual((r.kind, r.gid, r.to), (kind, "g1", None))
        r = parse(doc("MTS-004", [{"session_id": "g1", "title": "do it"}]))
        self.assertEqual((r.kind, json.loads(r.content)), ("custom", {"title": "do it"}))
        # The stanza's addressee stands in for a missing to; body as a JSON string.
        r = parse(doc("MTT-000", json.dumps([{"text": "hi"}])), default_to="lily")
        self.assertEqual((r.to, r.content), ("lily", "hi"))

    def test_commands(self):
        for msg_type, action in (("MTC-000", "delivered"), ("MTC-001", "read"), ("MTC-002", "recall")):
            r = parse(doc(msg_type, [{"msg_id": "x"}], to="jack"))
            self.assertEqual((r.action, r.msgid, r.to, r.gid), (action, "x", "jack", None))
            r = parse(doc(msg_type, [{"msg_id": "x", "session_id": "g"}], to="jack"))
            self.assertEqual((r.to, r.gid), (None, "g"))

    def test_each_error(self):
        cases = {
            "error-005": ["{", "[1]", "null", '"text"', "\ud800"],
            "error-001": [doc("", [{"text": "x"}]), doc("MTT-9", [{"text": "x"}]), doc("HTS-000", [{}]), doc("HFO-000", [{}]), json.dumps({"body": []})],
            "error-006": [doc("MTT-000", {"text": "x"}), doc("MTT-000", 5), doc("MTT-000", "[not json")],
            "error-000": ["", " ", doc("MTT-000", []), doc("MTT-000", [1]), doc("MTT-000", [{"file_id": "f"}]), doc("MTT-001", [{"text": "x"}]), doc("MTC-001", [{}]), doc("MTT-000", None), doc("MTT-000", ""), doc("MTT-000", " ")],
            "error-007": [doc("MTS-000", [{"text": "x"}]), doc("MTS-004", [{"title": "x"}])],
            "error-004": [doc("MTT-000", [{"text": "x"}]), doc("MTC-000", [{"msg_id": "x"}])],
        }
        for code, raws in cases.items():
            for raw in raws:
                e = self.assertRaises(EnvelopeError, parse, raw)
                self.assertEqual(e.code, code, raw)
                self.assertTrue(e.detail)

    def test_fuzz_only_envelope_errors(self):
        rng = random.Random(7)
        atoms = ['"MTT-000"', '"MTS-001"', '"MTC-002"', "[]", "{}", "null", "1", '"x"', '{"text":"a"}', '{"session_id":"g"}']
        keys = ["msg_type", "body", "to", "msg_id", "msg_to", "msg_time"]
        for _ in range(400):
            fields = {rng.choice(keys): json.loads(rng.choice(atoms)) for _ in range(rng.randrange(6))}
            raw = json.dumps(fields)
            if rng.random() < 0.3:
                cut = rng.randrange(len(raw) + 1)
                raw = raw[:cut] + rng.choice(["}", "\\", '"', "\x00", "ÿ"]) + raw[cut:]
            try:
                parse(raw, default_to=rng.choice([None, "jack"]))
            except EnvelopeError:
                pass


class RenderTests(unittest.TestCase):
    def data(self, **changes):
        d = {"msgid": "m1", "from": "rose", "from_res": "r", "kind": "text", "body": "hi", "time": 5, "client_time": "", "recalled": False, "to": "jack"}
        d.update(changes)
        return d

    def test_messages(self):
        out = E.message(self.data())
        self.assertEqual((out["msg_type"], out["msg_time"], out["body"]), ("MTT-000", "5", [{"text": "hi"}]))
        self.assertEqual({k: out[k] for k in E.HEADER}, E.HEADER)
        group = self.data(kind="voice", body="f9", gid="g1", seq=1, client_time="1599218283837")
        del group["to"]
        out = E.message(group)
        self.assertEqual((out["msg_type"], out["to"], out["msg_time"], out["body"]), ("MTS-003", "g1", "1599218283837", [{"file_id": "f9", "session_id": "g1"}]))
        out = E.message(self.data(recalled=True))
        self.assertEqual((out["body"], out["recalled"]), ([{"text": ""}], "1"))
        # A 1:1 custom message has no MTT code of its own: text.
        self.assertEqual(E.message(self.data(kind="custom"))["msg_type"], "MTT-000")

    def test_commands_and_sessions(self):
        receipt = E.receipt({"msgid": "m1", "from": "jack", "kind": "delivered", "gid": "g"}, "rose", 7)
        self.assertEqual((receipt["msg_type"], receipt["from"], receipt["to"], receipt["msg_time"], receipt["body"]), ("MTC-000", "jack", "rose", "7", [{"msg_id": "m1", "session_id": "g"}]))
        self.assertNotEqual(receipt["msg_id"], "m1")
        self.assertEqual(E.recall({"msgid": "m1", "from": "jack", "to": "rose"}, 7)["msg_type"], "MTC-002")
        added = E.session_added({"gid": "g", "creator": "rose", "name": "n", "created_at": 3, "members": [{"uid": "rose"}]}, "jack", 9)
        self.assertEqual(added["body"][0]["subscribers"], [{"user_id": "rose"}])
        changed = E.session_modified({"gid": "g", "owner": "rose", "name": "n", "added": ["a"], "removed": ["b"], "time": 4}, "jack")
        self.assertEqual(changed["body"][0]["subscribers"], [{"user_id": "a", "type": "add"}, {"user_id": "b", "type": "del"}])
        self.assertEqual(E.session_deleted({"gid": "g", "owner": "rose", "time": 4}, "jack")["msg_type"], "HTS-002")
