"""
The enterprise directory (seed 001, 2.2.13-2.2.14): parsing imports, the
versioned store, the four QIDs over real HTTP, and ``python -m imd
directory`` as the administrator runs it.
"""

from __future__ import annotations

import json
import os
import sys

from twisted.internet import reactor
from twisted.internet.defer import gatherResults, inlineCallbacks, returnValue
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial import unittest

from imd.core.directory import DirectoryService, parse_import
from imd.errors import InvalidField
from imd.store import migrate
from imd.store.store import Store
from tests.support import PostgresBackend, ServerTestMixin, SQLiteBackend, child_env

DEPARTMENTS = [
    {"id": "d1", "name": "Head office", "ord": 1},
    {"id": "d2", "parent_id": "d1", "name": "Sales", "ord": 2},
    {"id": "d3", "parent_id": "d1", "name": "Support", "ord": 3},
]
CONTACTS = [
    {"uid": "alice", "dept_id": "d2", "name": "Alice", "telephone": "010-1", "ord": 1},
    {"uid": "bob", "dept_id": "d2", "name": "Bob", "email": "bob@example.com", "ord": 2},
    {"uid": "carol", "dept_id": "d3", "name": "Carol", "position": "Lead", "ord": 3},
]
# CONTACTS with bob's telephone changed, carol removed and dave added.
CONTACTS_2 = [
    CONTACTS[0],
    {**CONTACTS[1], "telephone": "010-2"},
    {"uid": "dave", "dept_id": "d3", "name": "Dave", "cellphone": "13800000004", "ord": 4},
]


def encode(departments=None, contacts=None) -> bytes:
    doc = {}
    if departments is not None:
        doc["departments"] = departments
    if contacts is not None:
        doc["contacts"] = contacts
    return json.dumps(doc).encode()


def dept(id, name, parent_id=None, ord=0, version=1, deleted=False):
    return {"id": id, "parent_id": parent_id, "name": name, "ord": ord, "version": version, "deleted": deleted}


def contact(uid, name="", dept_id=None, telephone="", cellphone="", email="", position="", ord=0,
            version=1, deleted=False):
    return {
        "uid": uid, "dept_id": dept_id, "name": name, "telephone": telephone, "cellphone": cellphone,
        "email": email, "position": position, "ord": ord, "version": version, "deleted": deleted,
    }


FIRST_DEPARTMENTS = [
    dept("d1", "Head office", ord=1),
    dept("d2", "Sales", "d1", ord=2),
    dept("d3", "Support", "d1", ord=3),
]
FIRST_CONTACTS = [
    contact("alice", "Alice", "d2", telephone="010-1", ord=1),
    contact("bob", "Bob", "d2", email="bob@example.com", ord=2),
    contact("carol", "Carol", "d3", position="Lead", ord=3),
]


class ParseTests(unittest.TestCase):
    """parse_import needs no database."""

    def assertInvalid(self, data: bytes, fmt: str, *fragments: str) -> None:
        e = self.assertRaises(InvalidField, parse_import, data, fmt)
        for fragment in fragments:
            self.assertIn(fragment, e.message)

    def test_json_normalised(self):
        parsed = parse_import(
            encode(
                [{"id": 7, "name": "Seven", "parent_id": "", "ord": "-3"}],
                [{"uid": "u1", "dept_id": 7, "ord": 2.0}],
            ),
            "json",
        )
        self.assertEqual(
            parsed,
            {
                "departments": [{"id": "7", "parent_id": None, "name": "Seven", "ord": -3}],
                "contacts": [
                    {"uid": "u1", "dept_id": "7", "name": "", "telephone": "", "cellphone": "",
                     "email": "", "position": "", "ord": 2}
                ],
            },
        )

    def test_json_one_kind(self):
        self.assertEqual(list(parse_import(encode(contacts=[]), "json")), ["contacts"])
        # A byte order mark is allowed.
        self.assertEqual(parse_import(b"\xef\xbb\xbf" + encode([]), "json"), {"departments": []})

    def test_csv_by_header(self):
        parsed = parse_import(b"id,parent_id,name,ord\r\nd1,,Head office,1\r\nd2,d1,Sales,\r\n", "csv")
        self.assertEqual(
            parsed,
            {"departments": [
                {"id": "d1", "parent_id": None, "name": "Head office", "ord": 1},
                {"id": "d2", "parent_id": "d1", "name": "Sales", "ord": 0},
            ]},
        )
        parsed = parse_import("uid,name,email\nalice,Alice,a@example.com\nbob,Bób,\n".encode(), "csv")
        self.assertEqual([(c["uid"], c["name"], c["email"]) for c in parsed["contacts"]],
                         [("alice", "Alice", "a@example.com"), ("bob", "Bób", "")])
        self.assertEqual(list(parsed), ["contacts"])

    def test_csv_header_only(self):
        """Without a kind column the header tells the kind, even with no rows: the list is emptied."""
        self.assertEqual(parse_import(b"uid,name\n", "csv"), {"contacts": []})
        self.assertEqual(parse_import(b"id,name\n", "csv"), {"departments": []})

    def test_csv_kind_column(self):
        parsed = parse_import(
            b"kind,id,parent_id,uid,dept_id,name,ord\n"
            b"department,d1,,,,Head office,1\n"
            b"contact,,,alice,d1,Alice,2\n"
            b"departments,d2,d1,,,Sales,\n",
            "csv",
        )
        self.assertEqual([d["id"] for d in parsed["departments"]], ["d1", "d2"])
        self.assertEqual(parsed["contacts"][0]["dept_id"], "d1")
        self.assertEqual(parsed["contacts"][0]["ord"], 2)

    def test_not_utf8(self):
        self.assertInvalid("id,name\nd1,Zoë\n".encode("latin-1"), "csv", "not UTF-8")
        self.assertInvalid(b'{"departments": [{"id": "\xff"}]}', "json", "not UTF-8")

    def test_not_json(self):
        self.assertInvalid(b'{"departments": [', "json", "not JSON")
        self.assertInvalid(b"", "json", "not JSON")

    def test_json_not_an_object_of_kinds(self):
        for doc in ([], "departments", {}, {"departments": [], "staff": []}):
            self.assertInvalid(json.dumps(doc).encode(), "json", '"departments" and/or "contacts"')
        self.assertInvalid(b'{"contacts": {"uid": "a"}}', "json", "contacts must be a list")

    def test_row_not_an_object(self):
        self.assertInvalid(encode([DEPARTMENTS[0], ["d2", "Sales"]]), "json",
                           "departments row 2 must be an object")

    def test_unknown_field(self):
        self.assertInvalid(encode(contacts=[{"uid": "a", "mobile": "1", "fax": "2"}]), "json",
                           "contacts row 1: unknown field(s) fax, mobile")
        self.assertInvalid(encode([{"id": "d1", "name": "x", "uid": "a"}]), "json",
                           "departments row 1: unknown field(s) uid")

    def test_missing_required(self):
        self.assertInvalid(encode([DEPARTMENTS[0], {"name": "x"}]), "json", "departments row 2: id is required")
        self.assertInvalid(encode([{"id": "d1", "name": ""}]), "json", "departments row 1: name is required")
        self.assertInvalid(encode(contacts=[CONTACTS[0], CONTACTS[1], {"name": "x"}]), "json",
                           "contacts row 3: uid is required")
        self.assertInvalid(b"uid,name\n,Nobody\n", "csv", "contacts row 1: uid is required")

    def test_too_long(self):
        self.assertInvalid(encode(contacts=[CONTACTS[0], {"uid": "b", "email": "x" * 256}]), "json",
                           "contacts row 2: email must be at most 255 characters")
        self.assertInvalid(encode([{"id": "d" * 51, "name": "x"}]), "json",
                           "departments row 1: id must be at most 50 characters")
        # 255 is fine.
        parse_import(encode(contacts=[{"uid": "b", "email": "x" * 255}]), "json")

    def test_not_a_string(self):
        self.assertInvalid(encode([{"id": "d1", "name": ["x"]}]), "json", "departments row 1: name must be a string")

    def test_duplicate_ids(self):
        self.assertInvalid(encode(DEPARTMENTS + [{"id": "d2", "name": "Again"}]), "json",
                           "departments row 4: id d2 appears twice")
        # A number and its text are the same id.
        self.assertInvalid(encode([{"id": 1, "name": "a"}, {"id": "1", "name": "b"}]), "json",
                           "departments row 2: id 1 appears twice")
        self.assertInvalid(b"uid\nalice\nalice\n", "csv", "contacts row 2: uid alice appears twice")

    def test_bad_ord(self):
        for ord in ("first", "1.5", 1.5, True, [1], {"n": 1}):
            self.assertInvalid(encode(contacts=[{"uid": "a", "ord": ord}]), "json",
                               "contacts row 1: ord must be an integer")
        self.assertInvalid(encode([{"id": "d", "name": "x", "ord": 2**31}]), "json",
                           "departments row 1: ord must be between")
        self.assertInvalid(b"id,name,ord\nd1,x,1\nd2,y,two\n", "csv", "departments row 2: ord must be an integer")
        parse_import(encode([{"id": "d", "name": "x", "ord": 2**31 - 1}]), "json")

    def test_csv_errors(self):
        self.assertInvalid(b"", "csv", "no header")
        self.assertInvalid(b"kind,id,name\n", "csv", "no rows")
        self.assertInvalid(b"kind,id,name\ndepartment,d1,x\nteam,d2,y\n", "csv", "CSV line 3", "unknown kind 'team'")
        self.assertInvalid(b"id,name\nd1,Sales, Inc\n", "csv", "CSV line 2", "more values than the header")
        # An unknown column is refused even when no row fills it, and even with no rows.
        self.assertInvalid(b"id,name,fax\nd1,x,\n", "csv", "unknown column(s) fax")
        self.assertInvalid(b"whatever\n", "csv", "unknown column(s) whatever")
        self.assertInvalid(b"kind,uid,fax\ncontact,a,\n", "csv", "unknown column(s) fax")
        # A department row of a mixed file cannot fill a contact's columns.
        self.assertInvalid(b"kind,id,uid,name\ndepartment,d1,alice,x\n", "csv",
                           "departments row 1: unknown field(s) uid")

    def test_unknown_format(self):
        self.assertInvalid(b"id,name\n", "xml", "unknown format")


class DirectoryMixin:
    def make_service(self):
        store = Store(self.database_url(), reactor=reactor)
        store.migrate()
        store.start()
        self.addCleanup(store.stop)
        return DirectoryService(store)

    @inlineCallbacks
    def test_empty(self):
        directory = self.make_service()
        for kind in ("departments", "contacts"):
            self.assertEqual((yield directory.version(kind)), 0)
            self.assertEqual((yield directory.listing(kind)), (0, [], False))
            self.assertEqual((yield directory.listing(kind, "0")), (0, [], True))

    @inlineCallbacks
    def test_first_import(self):
        directory = self.make_service()
        result = yield directory.import_data(encode(DEPARTMENTS, CONTACTS), "json")
        self.assertEqual(result, {"departments": (1, 3), "contacts": (1, 3)})
        self.assertEqual((yield directory.version("departments")), 1)
        self.assertEqual((yield directory.version("contacts")), 1)
        self.assertEqual((yield directory.listing("departments")), (1, FIRST_DEPARTMENTS, False))
        self.assertEqual((yield directory.listing("contacts")), (1, FIRST_CONTACTS, False))

    @inlineCallbacks
    def test_reimport_changes_nothing(self):
        directory = self.make_service()
        yield directory.import_data(encode(DEPARTMENTS, CONTACTS), "json")
        # Same rows in another order, numbers as text, empty fields spelled out.
        again = [dict(d, ord=str(d["ord"]), parent_id=d.get("parent_id", "")) for d in reversed(DEPARTMENTS)]
        result = yield directory.import_data(encode(again, CONTACTS), "json")
        self.assertEqual(result, {"departments": (1, 0), "contacts": (1, 0)})
        self.assertEqual((yield directory.version("departments")), 1)
        self.assertEqual((yield directory.listing("contacts", 1)), (1, [], True))
        self.assertEqual((yield directory.listing("contacts")), (1, FIRST_CONTACTS, False))

    @inlineCallbacks
    def test_change_add_remove(self):
        directory = self.make_service()
        yield directory.import_data(encode(DEPARTMENTS, CONTACTS), "json")
        result = yield directory.import_data(encode(contacts=CONTACTS_2), "json")
        self.assertEqual(result, {"contacts": (2, 3)})
        self.assertEqual((yield directory.version("contacts")), 2)
        # The departments were not in the file: untouched.
        self.assertEqual((yield directory.version("departments")), 1)
        self.assertEqual((yield directory.listing("departments")), (1, FIRST_DEPARTMENTS, False))
        changed = [
            contact("bob", "Bob", "d2", telephone="010-2", email="bob@example.com", ord=2, version=2),
            contact("carol", "Carol", "d3", position="Lead", ord=3, version=2, deleted=True),
            contact("dave", "Dave", "d3", cellphone="13800000004", ord=4, version=2),
        ]
        self.assertEqual((yield directory.listing("contacts", 1)), (2, changed, True))
        self.assertEqual((yield directory.listing("contacts", "1")), (2, changed, True))
        self.assertEqual((yield directory.listing("contacts", 2)), (2, [], True))
        # Version 0 is "I have nothing": every row ever, deleted ones flagged.
        self.assertEqual((yield directory.listing("contacts", 0)), (2, [FIRST_CONTACTS[0]] + changed, True))
        self.assertEqual(
            (yield directory.listing("contacts")),
            (2, [FIRST_CONTACTS[0], changed[0], changed[2]], False),
        )

    @inlineCallbacks
    def test_removed_row_comes_back(self):
        directory = self.make_service()
        yield directory.import_data(encode(contacts=CONTACTS), "json")
        yield directory.import_data(encode(contacts=CONTACTS[:2]), "json")
        # Removing what is already removed changes nothing.
        self.assertEqual((yield directory.import_data(encode(contacts=CONTACTS[:2]), "json")), {"contacts": (2, 0)})
        self.assertEqual((yield directory.import_data(encode(contacts=CONTACTS), "json")), {"contacts": (3, 1)})
        self.assertEqual((yield directory.listing("contacts", 2)), (3, [dict(FIRST_CONTACTS[2], version=3)], True))
        self.assertEqual((yield directory.listing("contacts"))[1][2]["deleted"], False)

    @inlineCallbacks
    def test_empty_list_removes_everything(self):
        directory = self.make_service()
        yield directory.import_data(encode(DEPARTMENTS), "json")
        self.assertEqual((yield directory.import_data(encode([]), "json")), {"departments": (2, 3)})
        self.assertEqual((yield directory.listing("departments")), (2, [], False))
        _, rows, _ = yield directory.listing("departments", 1)
        self.assertEqual([(d["id"], d["deleted"]) for d in rows], [("d1", True), ("d2", True), ("d3", True)])

    @inlineCallbacks
    def test_listing_versions(self):
        """
        A version the server never had (ahead of it, negative) gets the
        whole list, not a delta; one that is not a number is refused.
        """
        directory = self.make_service()
        yield directory.import_data(encode(DEPARTMENTS), "json")
        yield directory.import_data(encode(DEPARTMENTS[:2]), "json")
        full = (2, FIRST_DEPARTMENTS[:2], False)
        for ver in (None, "", 3, "99", -1, "-1"):
            self.assertEqual((yield directory.listing("departments", ver)), full, ver)
        for ver in ("abc", "1.5", [1], {}):
            yield self.assertFailure(directory.listing("departments", ver), InvalidField)

    @inlineCallbacks
    def test_order(self):
        directory = self.make_service()
        yield directory.import_data(
            encode([{"id": "b", "name": "B", "ord": 2}, {"id": "c", "name": "C", "ord": 1},
                    {"id": "a", "name": "A", "ord": 2}]),
            "json",
        )
        _, rows, _ = yield directory.listing("departments")
        self.assertEqual([d["id"] for d in rows], ["c", "a", "b"])

    @inlineCallbacks
    def test_csv_import(self):
        directory = self.make_service()
        result = yield directory.import_data(
            b"kind,id,parent_id,uid,dept_id,name,telephone,ord\n"
            b"department,d1,,,,Head office,,1\n"
            b"contact,,,alice,d1,Alice,010-1,1\n",
            "csv",
        )
        self.assertEqual(result, {"departments": (1, 1), "contacts": (1, 1)})
        result = yield directory.import_data(b"uid,dept_id,name,telephone,ord\nalice,d1,Alice,010-9,1\n", "csv")
        self.assertEqual(result, {"contacts": (2, 1)})
        self.assertEqual(
            (yield directory.listing("contacts", 1)),
            (2, [contact("alice", "Alice", "d1", telephone="010-9", ord=1, version=2)], True),
        )
        self.assertEqual((yield directory.version("departments")), 1)

    @inlineCallbacks
    def test_bad_import_changes_nothing(self):
        directory = self.make_service()
        yield directory.import_data(encode(DEPARTMENTS, CONTACTS), "json")
        bad = encode(DEPARTMENTS[:1], CONTACTS + [{"uid": "x" * 60}])
        yield self.assertFailure(directory.import_data(bad, "json"), InvalidField)
        self.assertEqual((yield directory.listing("departments")), (1, FIRST_DEPARTMENTS, False))

    @inlineCallbacks
    def test_concurrent_imports(self):
        """Two imports at once get a version each: no change hides behind the other's version."""
        directory = self.make_service()
        yield directory.import_data(encode(contacts=CONTACTS), "json")
        a = [dict(c, name=c["name"] + " A") for c in CONTACTS]
        b = [dict(c, name=c["name"] + " B") for c in CONTACTS]
        results = yield gatherResults([
            directory.import_data(encode(contacts=a), "json"),
            directory.import_data(encode(contacts=b), "json"),
        ])
        self.assertEqual(sorted(r["contacts"] for r in results), [(2, 3), (3, 3)])
        last = a if results[0]["contacts"][0] == 3 else b
        version, rows, delta = yield directory.listing("contacts", 2)
        self.assertEqual((version, delta), (3, True))
        self.assertEqual([c["name"] for c in rows], [c["name"] for c in last])


class SQLiteDirectoryTests(DirectoryMixin, SQLiteBackend, unittest.TestCase):
    pass


class PostgresDirectoryTests(DirectoryMixin, PostgresBackend, unittest.TestCase):
    pass


def pairs_to_dicts(body):
    assert body["type"] == "table", body
    return [{p["n"]: p["v"] for p in row} for row in body["result"]]


class DirectoryHttpMixin(ServerTestMixin):
    @inlineCallbacks
    def setup_server(self):
        server = self.start_server()
        yield server.accounts.register("alice", "secret1")
        token = yield self.login(server, "alice", "secret1")
        returnValue((server, token))

    @inlineCallbacks
    def qid(self, server, token, name, body=None, expect=200):
        code, result, _ = yield self.http(server, "POST", f"/qid/{name}", {} if body is None else body, token=token)
        self.assertEqual(code, expect, result)
        returnValue(result)

    @inlineCallbacks
    def test_versions(self):
        server, token = yield self.setup_server()
        self.assertEqual((yield self.qid(server, token, "QID_IM_GET_DEPT_VER")), {"type": "text", "result": "0"})
        self.assertEqual((yield self.qid(server, token, "QID_IM_GET_CONTACTS_VER")), {"type": "text", "result": "0"})
        yield server.directory.import_data(encode(DEPARTMENTS, CONTACTS), "json")
        yield server.directory.import_data(encode(contacts=CONTACTS_2), "json")
        self.assertEqual((yield self.qid(server, token, "QID_IM_GET_DEPT_VER")), {"type": "text", "result": "1"})
        self.assertEqual((yield self.qid(server, token, "QID_IM_GET_CONTACTS_VER")), {"type": "text", "result": "2"})

    @inlineCallbacks
    def test_full_lists(self):
        server, token = yield self.setup_server()
        body = yield self.qid(server, token, "QID_IM_GET_DEPT_LIST")
        self.assertEqual(body, {"type": "table", "result": [], "ext": {"ver": "0", "delta": False}})
        yield server.directory.import_data(encode(DEPARTMENTS, CONTACTS), "json")
        body = yield self.qid(server, token, "QID_IM_GET_DEPT_LIST")
        self.assertEqual(
            body,
            {
                "type": "table",
                "result": [
                    [{"n": "id", "v": "d1"}, {"n": "parent_id", "v": ""}, {"n": "name", "v": "Head office"},
                     {"n": "ord", "v": 1}, {"n": "version", "v": 1}],
                    [{"n": "id", "v": "d2"}, {"n": "parent_id", "v": "d1"}, {"n": "name", "v": "Sales"},
                     {"n": "ord", "v": 2}, {"n": "version", "v": 1}],
                    [{"n": "id", "v": "d3"}, {"n": "parent_id", "v": "d1"}, {"n": "name", "v": "Support"},
                     {"n": "ord", "v": 3}, {"n": "version", "v": 1}],
                ],
                "ext": {"ver": "1", "delta": False},
            },
        )
        body = yield self.qid(server, token, "QID_IM_GET_CONTACTS_LIST", {"ver": ""})
        self.assertEqual(body["ext"], {"ver": "1", "delta": False})
        self.assertEqual(
            body["result"][0],
            [{"n": "uid", "v": "alice"}, {"n": "dept_id", "v": "d2"}, {"n": "name", "v": "Alice"},
             {"n": "telephone", "v": "010-1"}, {"n": "cellphone", "v": ""}, {"n": "email", "v": ""},
             {"n": "position", "v": ""}, {"n": "ord", "v": 1}, {"n": "version", "v": 1}],
        )
        self.assertEqual([c["uid"] for c in pairs_to_dicts(body)], ["alice", "bob", "carol"])

    @inlineCallbacks
    def test_delta(self):
        server, token = yield self.setup_server()
        yield server.directory.import_data(encode(DEPARTMENTS, CONTACTS), "json")
        yield server.directory.import_data(encode(contacts=CONTACTS_2), "json")
        body = yield self.qid(server, token, "QID_IM_GET_CONTACTS_LIST", {"ver": "1"})
        self.assertEqual(body["ext"], {"ver": "2", "delta": True})
        self.assertEqual(
            body["result"],
            [
                [{"n": "uid", "v": "bob"}, {"n": "dept_id", "v": "d2"}, {"n": "name", "v": "Bob"},
                 {"n": "telephone", "v": "010-2"}, {"n": "cellphone", "v": ""},
                 {"n": "email", "v": "bob@example.com"}, {"n": "position", "v": ""}, {"n": "ord", "v": 2},
                 {"n": "version", "v": 2}, {"n": "deleted", "v": "0"}],
                [{"n": "uid", "v": "carol"}, {"n": "dept_id", "v": "d3"}, {"n": "name", "v": "Carol"},
                 {"n": "telephone", "v": ""}, {"n": "cellphone", "v": ""}, {"n": "email", "v": ""},
                 {"n": "position", "v": "Lead"}, {"n": "ord", "v": 3}, {"n": "version", "v": 2},
                 {"n": "deleted", "v": "1"}],
                [{"n": "uid", "v": "dave"}, {"n": "dept_id", "v": "d3"}, {"n": "name", "v": "Dave"},
                 {"n": "telephone", "v": ""}, {"n": "cellphone", "v": "13800000004"}, {"n": "email", "v": ""},
                 {"n": "position", "v": ""}, {"n": "ord", "v": 4}, {"n": "version", "v": 2},
                 {"n": "deleted", "v": "0"}],
            ],
        )
        # A number works as well as its text.
        self.assertEqual((yield self.qid(server, token, "QID_IM_GET_CONTACTS_LIST", {"ver": 1})), body)
        # Up to date: an empty delta.
        body = yield self.qid(server, token, "QID_IM_GET_CONTACTS_LIST", {"ver": "2"})
        self.assertEqual(body, {"type": "table", "result": [], "ext": {"ver": "2", "delta": True}})
        body = yield self.qid(server, token, "QID_IM_GET_DEPT_LIST", {"ver": "1"})
        self.assertEqual(body, {"type": "table", "result": [], "ext": {"ver": "1", "delta": True}})
        # Ahead of the server: the whole list.
        body = yield self.qid(server, token, "QID_IM_GET_CONTACTS_LIST", {"ver": "7"})
        self.assertEqual(body["ext"], {"ver": "2", "delta": False})
        self.assertEqual([c["uid"] for c in pairs_to_dicts(body)], ["alice", "bob", "dave"])
        self.assertNotIn("deleted", pairs_to_dicts(body)[0])

    @inlineCallbacks
    def test_bad_version(self):
        server, token = yield self.setup_server()
        body = yield self.qid(server, token, "QID_IM_GET_DEPT_LIST", {"ver": "abc"}, expect=400)
        self.assertEqual(body, {"type": "error", "code": "invalid_field", "err": "ver must be a version number"})

    @inlineCallbacks
    def test_unauthenticated(self):
        server, token = yield self.setup_server()
        for name in ("QID_IM_GET_DEPT_VER", "QID_IM_GET_DEPT_LIST", "QID_IM_GET_CONTACTS_VER",
                     "QID_IM_GET_CONTACTS_LIST"):
            code, body, _ = yield self.http(server, "POST", f"/qid/{name}", {})
            self.assertEqual((code, body["code"]), (401, "unauthenticated"), name)
            code, body, _ = yield self.http(server, "POST", f"/qid/{name}", {}, token="nope")
            self.assertEqual((code, body["code"]), (401, "invalid_token"), name)


class SQLiteDirectoryHttpTests(DirectoryHttpMixin, SQLiteBackend, unittest.TestCase):
    pass


class PostgresDirectoryHttpTests(DirectoryHttpMixin, PostgresBackend, unittest.TestCase):
    pass


class DirectoryCliMixin:
    """``python -m imd directory``, run as a child process like tests.test_cli."""

    def setUp(self):
        self.url = self.database_url()
        # What `python -m imd db upgrade` does: the commands refuse a database
        # that does not exist yet.
        migrate.upgrade(self.url)
        self.cwd = os.path.abspath(self.mktemp())
        os.makedirs(self.cwd)

    def write(self, name: str, data: bytes) -> str:
        with open(os.path.join(self.cwd, name), "wb") as f:
            f.write(data)
        return name

    @inlineCallbacks
    def imd(self, *args: str):
        out, err, code = yield getProcessOutputAndValue(
            sys.executable,
            ("-m", "imd", *args),
            env=child_env(IMD_DATABASE_URL=self.url),
            path=self.cwd,
            reactor=reactor,
        )
        returnValue((code, out.decode(), err.decode()))

    @inlineCallbacks
    def ok(self, *args: str):
        code, out, err = yield self.imd(*args)
        self.assertEqual(code, 0, f"python -m imd {' '.join(args)}: {out}{err}")
        returnValue(out)

    @inlineCallbacks
    def fails(self, code: int, args: tuple, *fragments: str):
        got, out, err = yield self.imd(*args)
        self.assertEqual(got, code, out + err)
        self.assertEqual(out, "")
        database, *lines = err.splitlines()
        self.assertTrue(database.startswith("database: "), err)
        self.assertEqual(len(lines), 1, err)
        self.assertTrue(lines[0].startswith("imd: "), err)
        for fragment in fragments:
            self.assertIn(fragment, lines[0])

    @inlineCallbacks
    def listing(self, kind: str, ver=None):
        store = Store(self.url, reactor=reactor)
        store.start()
        try:
            result = yield DirectoryService(store).listing(kind, ver)
        finally:
            store.stop()
        returnValue(result)

    @inlineCallbacks
    def test_import_json_and_show(self):
        out = yield self.ok("directory", "show")
        self.assertEqual(out, "departments: version 0\ncontacts: version 0\n")
        self.write("directory.json", encode(DEPARTMENTS, CONTACTS))
        out = yield self.ok("directory", "import", "directory.json")
        self.assertEqual(out, "departments: version 1, 3 rows changed\ncontacts: version 1, 3 rows changed\n")
        out = yield self.ok("directory", "import", "directory.json")
        self.assertEqual(out, "departments: version 1, 0 rows changed\ncontacts: version 1, 0 rows changed\n")
        self.write("contacts.JSON", encode(contacts=CONTACTS_2))
        out = yield self.ok("directory", "import", "contacts.JSON")
        self.assertEqual(out, "contacts: version 2, 3 rows changed\n")
        out = yield self.ok("directory", "show")
        self.assertEqual(out, "departments: version 1\ncontacts: version 2\n")
        version, rows, delta = yield self.listing("contacts", 1)
        self.assertEqual([(c["uid"], c["deleted"]) for c in rows], [("bob", False), ("carol", True), ("dave", False)])

    @inlineCallbacks
    def test_import_csv(self):
        self.write("departments.csv", b"id,parent_id,name,ord\nd1,,Head office,1\nd2,d1,Sales,2\n")
        self.write("contacts.csv", b"uid,dept_id,name,email,ord\nalice,d2,Alice,a@example.com,1\n")
        out = yield self.ok("directory", "import", "departments.csv")
        self.assertEqual(out, "departments: version 1, 2 rows changed\n")
        out = yield self.ok("directory", "import", "contacts.csv")
        self.assertEqual(out, "contacts: version 1, 1 row changed\n")
        # --format for a file whose name does not tell; a kind column for both lists in one file.
        self.write("both.txt", b"kind,id,parent_id,uid,dept_id,name\n"
                               b"department,d1,,,,Head office\n"
                               b"contact,,,alice,d1,Alice\n")
        out = yield self.ok("directory", "import", "both.txt", "--format", "csv")
        self.assertEqual(out, "departments: version 2, 2 rows changed\ncontacts: version 2, 1 row changed\n")
        version, rows, _ = yield self.listing("departments")
        self.assertEqual((version, [d["id"] for d in rows]), (2, ["d1"]))

    @inlineCallbacks
    def test_bad_files(self):
        yield self.fails(1, ("directory", "import", "missing.json"), "cannot read missing.json", "No such file")
        self.write("bad.json", encode(DEPARTMENTS, CONTACTS + [{"uid": "erin", "ord": "last"}]))
        yield self.fails(1, ("directory", "import", "bad.json"), "contacts row 4: ord must be an integer")
        self.write("bad.csv", b"id,name\nd1,Head office\nd1,Again\n")
        yield self.fails(1, ("directory", "import", "bad.csv"), "departments row 2: id d1 appears twice")
        self.write("latin1.csv", "id,name\nd1,Zoë\n".encode("latin-1"))
        yield self.fails(1, ("directory", "import", "latin1.csv"), "not UTF-8")
        self.write("directory.txt", encode(DEPARTMENTS))
        yield self.fails(2, ("directory", "import", "directory.txt"), "cannot tell the format", "--format")
        # Nothing of it was imported.
        out = yield self.ok("directory", "show")
        self.assertEqual(out, "departments: version 0\ncontacts: version 0\n")


class SQLiteDirectoryCliTests(DirectoryCliMixin, SQLiteBackend, unittest.TestCase):
    pass


class PostgresDirectoryCliTests(DirectoryCliMixin, PostgresBackend, unittest.TestCase):
    pass
