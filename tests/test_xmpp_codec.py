"""The XMPP stream parser and stanza helpers, without a socket."""

import random

from twisted.trial import unittest

from imd.channels.xmpp.codec import StreamEnd, StreamError, StreamParser, StreamStart
from imd.channels.xmpp.stanzas import Jid, element, stanza_error

HEADER = (
    b"<?xml version='1.0'?><stream:stream xmlns='jabber:client'"
    b" xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0' xml:lang='en'>"
)
STANZAS = (
    b"<message to='rose@localhost' id='m1' type='chat'><body>a &amp; b &lt; c \xe4\xbd\xa0\xe5\xa5\xbd</body>"
    b"<tlim xmlns='im.itonglian.com' location='web'/></message>"
    b" \n<iq type='get' id='r1'><query xmlns='jabber:iq:roster'/></iq></stream:stream>"
)


class ParserTests(unittest.TestCase):
    def parse(self, *chunks, max_stanza=65536):
        parser = StreamParser(max_stanza)
        out = []
        for chunk in chunks:
            out.extend(parser.feed(chunk))
        return out

    def test_header_stanzas_and_end(self):
        start, message, iq, end = self.parse(HEADER + STANZAS)
        self.assertIsInstance(start, StreamStart)
        self.assertEqual(start.attrs, {"to": "localhost", "version": "1.0", "lang": "en"})
        self.assertEqual((message.uri, message.name, message["id"]), ("jabber:client", "message", "m1"))
        self.assertEqual(str(message.body), "a & b < c 你好")
        tlim = [c for c in message.elements() if c.name == "tlim"][0]
        self.assertEqual((tlim.uri, tlim["location"]), ("im.itonglian.com", "web"))
        self.assertIsNone(message.parent)
        self.assertEqual(iq.firstChildElement().uri, "jabber:iq:roster")
        self.assertIsInstance(end, StreamEnd)

    def test_any_split_gives_the_same_result(self):
        data = HEADER + STANZAS
        whole = [getattr(x, "toXml", lambda: type(x).__name__)() for x in self.parse(data)]
        rng = random.Random(2)
        for _ in range(30):
            cuts = sorted(rng.sample(range(1, len(data)), 8))
            chunks = [data[a:b] for a, b in zip([0] + cuts, cuts + [len(data)])]
            got = [getattr(x, "toXml", lambda: type(x).__name__)() for x in self.parse(*chunks)]
            self.assertEqual(got, whole)
        byte_by_byte = [getattr(x, "toXml", lambda: type(x).__name__)() for x in self.parse(*[data[i : i + 1] for i in range(len(data))])]
        self.assertEqual(byte_by_byte, whole)

    def assertCondition(self, condition, *chunks, **kw):
        e = self.assertRaises(StreamError, self.parse, *chunks, **kw)
        self.assertEqual(e.condition, condition)

    def test_refused(self):
        self.assertCondition("restricted-xml", b"<!DOCTYPE x [<!ENTITY a 'b'>]>")
        self.assertCondition("restricted-xml", HEADER, b"<!-- no -->")
        self.assertCondition("restricted-xml", HEADER, b"<?pi x?>")
        self.assertCondition("not-well-formed", HEADER, b"<m>&ext;</m>")
        self.assertCondition("not-well-formed", HEADER, b"<a></b>")
        self.assertCondition("not-well-formed", HEADER, b"\xff\xfe\x00")
        self.assertCondition("not-well-formed", HEADER, b"text between stanzas")
        self.assertCondition("invalid-namespace", b"<stream xmlns='jabber:client'>")
        self.assertCondition("policy-violation", HEADER, b"<a>" * 100)
        self.assertCondition("policy-violation", HEADER, b"<m><b>", b"x" * 2000, max_stanza=1000)
        # A big stanza in small pieces is still big.
        self.assertCondition("policy-violation", HEADER, *([b"<m>"] + [b"<b>xxxxxxxx</b>"] * 200), max_stanza=1000)

    def test_size_counts_each_stanza_alone(self):
        stanza = b"<m><b>" + b"x" * 500 + b"</b></m>"
        out = self.parse(HEADER, stanza * 20, max_stanza=1000)
        self.assertEqual(len(out), 21)

    def test_reset_starts_a_new_stream(self):
        parser = StreamParser(65536)
        parser.feed(HEADER + b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>")
        parser.reset()
        start, = parser.feed(HEADER)
        self.assertIsInstance(start, StreamStart)

    def test_fuzz_only_stream_errors(self):
        rng = random.Random(1337)
        pieces = [HEADER, STANZAS, b"<", b">", b"&", b"'", b"<!DOCTYPE", b"<!ENTITY", b"]]>", b"<![CDATA[", b"\x00", b"\xc3", b"</stream:stream>"]
        for _ in range(500):
            data = b"".join(rng.choice(pieces) if rng.random() < 0.6 else bytes([rng.randrange(256)]) for _ in range(rng.randrange(1, 30)))
            parser = StreamParser(4096)
            try:
                for i in range(0, len(data), 7):
                    parser.feed(data[i : i + 7])
            except StreamError:
                pass


class JidAndErrorTests(unittest.TestCase):
    def test_jids(self):
        jid = Jid.parse("rose@LocalHost/phone/1")
        self.assertEqual((jid.local, jid.domain, jid.resource), ("rose", "localhost", "phone/1"))
        self.assertEqual(str(jid), "rose@localhost/phone/1")
        self.assertEqual(Jid.parse("localhost").bare(), "localhost")
        for bad in ("", "@localhost", "rose@", "x" * 4000):
            self.assertIsNone(Jid.parse(bad))

    def test_stanza_error_answers_the_stanza(self):
        message = element("message", to="nobody@localhost", id="m1", type="chat")
        message.addElement("body", content="hi")
        error = stanza_error(message, "item-not-found", "no user nobody")
        xml = error.toXml()
        self.assertEqual((error["type"], error["id"], error["from"]), ("error", "m1", "nobody@localhost"))
        self.assertIn("<error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>", xml)
        self.assertIn(">no user nobody</text>", xml)
