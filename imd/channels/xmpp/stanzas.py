# -*- test-case-name: tests.test_xmpp_codec -*-
"""
Names and small builders of XMPP stanzas: namespaces, JIDs, stanza and
stream errors.  What every other module of the family writes with.
"""

from __future__ import annotations

from twisted.words.xish import domish

NS_CLIENT = "jabber:client"
NS_STREAMS = "http://etherx.jabber.org/streams"
NS_STREAM_ERRORS = "urn:ietf:params:xml:ns:xmpp-streams"
NS_STANZA_ERRORS = "urn:ietf:params:xml:ns:xmpp-stanzas"
NS_TLS = "urn:ietf:params:xml:ns:xmpp-tls"
NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
NS_BIND = "urn:ietf:params:xml:ns:xmpp-bind"
NS_SESSION = "urn:ietf:params:xml:ns:xmpp-session"
NS_ROSTER = "jabber:iq:roster"
NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"
NS_PING = "urn:xmpp:ping"
NS_SM = "urn:xmpp:sm:3"
NS_RECEIPTS = "urn:xmpp:receipts"
NS_MARKERS = "urn:xmpp:chat-markers:0"
NS_RETRACT = "urn:xmpp:message-retract:1"
NS_CARBONS = "urn:xmpp:carbons:2"
NS_FORWARD = "urn:xmpp:forward:0"
NS_DELAY = "urn:xmpp:delay"
NS_TLIM = "im.itonglian.com"
NS_SEARCH = "jabber:iq:search"
NS_DATA = "jabber:x:data"

# RFC 6120 section 8.3.3: each condition's error type.
ERROR_TYPES = {
    "bad-request": "modify",
    "conflict": "cancel",
    "feature-not-implemented": "cancel",
    "forbidden": "auth",
    "internal-server-error": "wait",
    "item-not-found": "cancel",
    "jid-malformed": "modify",
    "not-acceptable": "modify",
    "not-allowed": "cancel",
    "not-authorized": "auth",
    "policy-violation": "modify",
    "recipient-unavailable": "wait",
    "remote-server-not-found": "cancel",
    "resource-constraint": "wait",
    "service-unavailable": "cancel",
    "unexpected-request": "wait",
}


class Jid:
    """C{local@domain/resource}, each part optional but the domain."""

    __slots__ = ("local", "domain", "resource")

    def __init__(self, local: str, domain: str, resource: str = "") -> None:
        self.local, self.domain, self.resource = local, domain, resource

    @classmethod
    def parse(cls, text: str) -> "Jid | None":
        """None for what is no JID."""
        if not text or len(text) > 3071:
            return None
        bare, _, resource = text.partition("/")
        local, at, domain = bare.rpartition("@")
        if not domain or (at and not local):
            return None
        return cls(local, domain.lower(), resource)

    def bare(self) -> str:
        return f"{self.local}@{self.domain}" if self.local else self.domain

    def __str__(self) -> str:
        return f"{self.bare()}/{self.resource}" if self.resource else self.bare()


def element(name: str, uri: str = NS_CLIENT, **attrs: str) -> domish.Element:
    el = domish.Element((uri, name))
    for key, value in attrs.items():
        if value is not None:
            el[key.rstrip("_")] = value
    return el


def stanza_error(stanza: domish.Element, condition: str, text: str = "") -> domish.Element:
    """The error answer to C{stanza}: its name, id and addresses swapped (RFC 6120 8.3)."""
    answer = element(stanza.name, type="error", id=stanza.getAttribute("id"))
    if stanza.hasAttribute("to"):
        answer["from"] = stanza["to"]
    error = answer.addElement("error")
    error["type"] = ERROR_TYPES.get(condition, "cancel")
    error.addElement((NS_STANZA_ERRORS, condition))
    if text:
        error.addElement((NS_STANZA_ERRORS, "text"), content=text)
    return answer


def first_child(el: domish.Element, uri: str, name: str | None = None) -> domish.Element | None:
    for child in el.elements():
        if child.uri == uri and (name is None or child.name == name):
            return child
    return None


def text_of(el: domish.Element | None) -> str:
    return "" if el is None else str(el)
