"""
Each wire family's one serializer renders the same neutral core event in
its own words, and parses its words back into core values.
"""

from __future__ import annotations

import json
import time

from twisted.trial import unittest

from imd.channels.longconn import msgtypes as T
from imd.channels.longconn import protocol as longconn_protocol
from imd.channels.longconn.protocol import LongConnProtocol, LongConnSession
from imd.channels.longconn.websocket import WebSocketProtocol
from imd.channels.longconn import serialize as longconn
from imd.channels.longconn.framing import decode_body
from imd.channels.longconn.wiretime import format_time
from imd.channels.methodapi import serialize as methodapi
from imd.channels.xmpp import envelope
from imd.channels.xmpp import serialize as xmpp
from imd.channels.serverapi import serialize as serverapi
from imd.core import events
from imd.core.groups import group_data, invite_data, member_data
from imd.core.messages import message_data
from imd.core.notices import notice_data
from imd.errors import InvalidField
from imd.hub.interfaces import Event
from imd.store.groups import Group, GroupInvite, Member
from imd.store.messages import Message
from imd.store.roster import FriendGroup

NOW = 1_700_000_000_000


def _fields(cls, **values):
    # Every field of a store row, whatever the row gains later: the ones
    # given, None for the rest.
    return cls(**{name: values.get(name) for name in cls.__dataclass_fields__})


INVITE = _fields(GroupInvite, msgid="i1", msgfrom="alice", msgto="bob", gid="g1", gname="team", created_at=NOW)
GROUP = _fields(Group, gid="g1", name="team", creator="alice", type=1, exitable=False, created_at=NOW)
MEMBER = _fields(Member, uid="bob", name="Bob", remark="", role=0, join_time=NOW)


class GroupEventTests(unittest.TestCase):
    def test_an_invite_in_both_families(self):
        event = Event(events.GROUP_INVITE, invite_data(INVITE))
        self.assertEqual(
            longconn.event("bob", "pad", event),
            (
                T.IM_CHATROOM,
                {
                    "msgid": "i1",
                    "type": "0",
                    "from": "alice",
                    "from_res": "",
                    "to": "bob",
                    "to_res": "pad",
                    "gid": "g1",
                    "gname": "team",
                },
            ),
        )
        self.assertEqual(
            methodapi.event(event),
            {
                "action": "addGroup",
                "opt": "addMsg",
                "from_user_id": "alice",
                "sender": "alice",
                "group_id": "g1",
                "group_name": "team",
            },
        )

    def test_group_data_and_a_new_member(self):
        data = group_data(GROUP, [MEMBER])
        self.assertEqual(data["members"], [{"uid": "bob", "name": "Bob", "role": 0, "joined_at": NOW}])
        msgtype, body = longconn.event("bob", "pad", Event(events.GROUP_DATA, data))
        self.assertEqual(msgtype, T.IM_NOTIFY_GROUP_DATA)
        self.assertEqual(
            body,
            {
                "gid": "g1",
                "gname": "team",
                "creator": "alice",
                "type": "1",
                "exit": "0",
                "time": format_time(NOW),
                "peers": [{"uid": "bob", "fname": "Bob", "right": "0", "join_time": format_time(NOW)}],
            },
        )
        added = Event(events.GROUP_MEMBER_ADDED, dict(member_data(MEMBER), gid="g1"))
        self.assertEqual(longconn.event("alice", "pc", added)[1]["fname"], "Bob")
        # Seed 004 has no push for these.
        self.assertIsNone(methodapi.event(added))

    def test_a_group_row_has_no_peers(self):
        self.assertNotIn("peers", longconn.group(group_data(GROUP)))


class MessageTests(unittest.TestCase):
    def message(self, **changes):
        values = dict(
            id=1, msgid="m1", sender="alice", sender_res="pc", to_uid="bob", gid=None, group_seq=None,
            kind="text", body="secret", client_time="2015-01-30 12:23:00", created_at=NOW, recalled_at=None,
        )
        values.update(changes)
        return message_data(Message(**values))

    def test_row_and_live(self):
        data = self.message()
        row = longconn.message(data)
        self.assertEqual((row["time"], row["ctime"], row["stime"], row["body"]), (format_time(NOW), "2015-01-30 12:23:00", NOW, "secret"))
        self.assertNotIn("to_res", row)
        live = longconn.message(data, "pad")
        self.assertEqual((live["time"], live["to_res"]), ("2015-01-30 12:23:00", "pad"))

    def test_recalled_has_no_words_in_either_family(self):
        for data in (self.message(recalled_at=NOW), self.message(to_uid=None, gid="g1", group_seq=3, recalled_at=NOW)):
            for body in (longconn.message(data), longconn.event("bob", "pad", Event(events.MESSAGE, data))[1]):
                self.assertEqual((body["body"], body["recalled"]), ("", "1"))
            push = methodapi.event(Event(events.MESSAGE, data))
            self.assertEqual((push["content"], push["recalled"]), ("", True))
            for tlim in (False, True):
                stanza = xmpp.event(xmpp.Target("localhost", "bob", "pad", tlim), Event(events.MESSAGE, data))
                self.assertNotIn("secret", stanza.toXml())

    def test_xmpp_plain_and_tlim(self):
        data = self.message(client_time="1599218283837")
        plain = xmpp.event(xmpp.Target("localhost", "bob", "pad", False), Event(events.MESSAGE, data))
        self.assertEqual((plain["from"], plain["to"], plain["type"], plain["id"]), ("alice@localhost/pc", "bob@localhost/pad", "chat", "m1"))
        self.assertEqual(str(plain.body), "secret")
        tlim = xmpp.event(xmpp.Target("localhost", "bob", "pad", True), Event(events.MESSAGE, data))
        doc = envelope.parse(str(tlim.body))
        self.assertEqual((doc.action, doc.msgid, doc.to, doc.kind, doc.content, doc.client_time), ("send", "m1", "bob", "text", "secret", "1599218283837"))
        image = Event(events.MESSAGE, self.message(kind="image", body="f 1"))
        self.assertEqual(str(xmpp.event(xmpp.Target("localhost", "bob", "pad", False), image).body), "[image] f 1")
        url = "https://im.example.com/upload/mobileFileDownload"
        stanza = xmpp.event(xmpp.Target("localhost", "bob", "pad", False, download_url=url), image)
        self.assertEqual(str(stanza.body), url + "?fileId=f+1")
        group = self.message(to_uid=None, gid="g1", group_seq=3, kind="image", body="f1")
        stanza = xmpp.event(xmpp.Target("localhost", "bob", "pad", True), Event(events.MESSAGE, group))
        self.assertEqual((stanza["from"], stanza["type"]), ("g1@localhost/alice", "groupchat"))
        doc = envelope.parse(str(stanza.body))
        self.assertEqual((doc.gid, doc.kind, doc.content), ("g1", "image", "f1"))


    def test_a_group_message_is_encoded_once_for_its_members(self):
        calls = []
        real = longconn.event
        self.patch(longconn, "event", lambda uid, res, e: calls.append((uid, res)) or real(uid, res, e))

        def frame(cls, uid, res, event):
            protocol = cls.__new__(cls)
            protocol.session = LongConnSession(None, uid, res)
            return longconn_protocol._frame(protocol, event)

        event = Event(events.MESSAGE, self.message(to_uid=None, gid="g1", group_seq=3))
        frames = [frame(LongConnProtocol, uid, "phone", event) for uid in ("bob", "carol", "dave")]
        self.assertEqual(len(set(frames)), 1)
        self.assertEqual(calls, [("bob", "phone")])
        self.assertEqual(decode_body(frames[0][8:])["to_res"], "phone")
        # Another resource, another event (even with the same data), or
        # another encoding of frames: encoded again.
        self.assertEqual(decode_body(frame(LongConnProtocol, "erin", "pad", event)[8:])["to_res"], "pad")
        frame(LongConnProtocol, "bob", "pad", Event(events.MESSAGE, event.data))
        self.assertEqual(json.loads(frame(WebSocketProtocol, "bob", "pad", event))["body"]["to_res"], "pad")
        self.assertEqual(len(calls), 4)
        # An event rendered for its user is never taken from another's.
        notice = Event(events.NOTICE, notice_data("shop", "x", False, NOW, "bob", None, 7))
        for uid in ("bob", "bob"):
            frame(LongConnProtocol, uid, "pad", notice)
        self.assertEqual(len(calls), 6)


class NoticeTests(unittest.TestCase):
    def test_a_notice_in_every_family(self):
        direct = notice_data("shop", '{"order":1}', True, NOW, "bob", None, 7)
        team = notice_data("shop", "x", False, NOW, None, "g1", None)
        msgtype, body = longconn.event("bob", "pad", Event(events.NOTICE, direct))
        self.assertEqual((msgtype, body["from"], body["attach"], body["type"], body["to"]),
                         (T.IM_NOTIFY_SYSTEM, "shop", '{"order":1}', "0", "bob"))
        self.assertEqual(longconn.event("bob", "pad", Event(events.NOTICE, team))[1]["type"], "1")
        push = methodapi.event(Event(events.NOTICE, team))
        self.assertEqual((push["action"], push["content"], push["sendto"], push["to_group_id"]), ("notify", "x", "group", "g1"))
        copy = serverapi.copied_notice(direct, "Shop")
        self.assertEqual((copy["eventType"], copy["convType"], copy["attach"], copy["to"], copy["msgTimestamp"]),
                         ("1", "CUSTOM_PERSON", '{"order":1}', "bob", str(NOW)))
        self.assertEqual(serverapi.copied_notice(team, "")["convType"], "CUSTOM_TEAM")


class CopyTests(MessageTests):
    def test_a_message_as_a_copy(self):
        copy = serverapi.copied_message(self.message(kind="image"), "Alice")
        self.assertEqual(copy, {
            "eventType": "1", "convType": "PERSON", "to": "bob", "fromAccount": "alice", "fromClientType": "PC",
            "fromDeviceId": "pc", "fromNick": "Alice", "msgTimestamp": str(NOW), "msgType": "PICTURE",
            "body": "secret", "attach": "", "msgidClient": "m1", "msgidServer": "1", "resendFlag": "0",
        })
        group = serverapi.copied_message(self.message(to_uid=None, gid="g1", group_seq=2, sender_res="rest"), "")
        self.assertEqual((group["convType"], group["to"], group["fromClientType"]), ("TEAM", "g1", "REST"))
        self.assertTrue(all(isinstance(v, str) for v in copy.values()))


class TimeTests(unittest.TestCase):
    def test_each_second_its_own_text(self):
        # Kept from one call to the next while the second is the same.
        start = 1795325511000
        first = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(start / 1000))
        later = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(start / 1000 + 1))
        self.assertEqual([format_time(start), format_time(start + 999), format_time(start + 1000)], [first, first, later])
        self.assertEqual(format_time(start + 999), first)


class ParseTests(unittest.TestCase):
    def test_friend_groups_round_trip(self):
        groups = [FriendGroup(gid="1", name="我的好友", weight=0, is_default=True)]
        self.assertEqual(longconn.parse_friend_groups(longconn.friend_groups(groups)), groups)

    def test_bad_friend_groups(self):
        for grp in ("[", "{}", "[]", "[1]", '"\\ud800"', 5):
            self.assertRaises(InvalidField, longconn.parse_friend_groups, grp)

    def test_answer_names(self):
        self.assertIsNone(longconn.parse_answer_names(""))
        self.assertEqual(
            longconn.parse_answer_names('{"req_gid": "1", "resp_name": "Ali", "other": 1}'),
            {"requester_group": "1", "answerer_remark": "Ali"},
        )
        for msg in ("nope", "[1]", 3):
            self.assertRaises(InvalidField, longconn.parse_answer_names, msg)
