# -*- test-case-name: tests.test_serialize -*-
"""
The XMPP design's one serializer: hub events as stanzas, in two forms.
A I{tlim session} (one that carried seed 002's ``tlim`` element) gets
the seed's JSON envelope in ``<body>``; any other session gets what a
stock XMPP client understands: plain bodies, XEP-0184 receipts, XEP-0333
markers and XEP-0424 retractions.  L{imd.channels.xmpp.envelope} reads
both forms back.
"""

from __future__ import annotations

import itertools
from typing import Any, Callable, Mapping

from twisted.words.xish import domish

from imd.channels.xmpp import envelope
from imd.channels.xmpp.stanzas import (
    NS_CARBONS,
    NS_DATA,
    NS_FORWARD,
    NS_MARKERS,
    NS_RECEIPTS,
    NS_RETRACT,
    NS_ROSTER,
    NS_SEARCH,
    NS_TLIM,
    Jid,
    element,
    first_child,
    text_of,
)
from imd.core import events
from imd.hub.interfaces import Event

# XMPP's show values; imd's "online" is a presence without one.
SHOWS = ("chat", "away", "xa", "dnd")
_push_ids = itertools.count(1)


class Target:
    """Whom a session renders for: its full JID, and whether it speaks tlim."""

    def __init__(
        self, domain: str, uid: str, resource: str, tlim: bool, now: int = 0, carbons: bool = False, download_url: str = ""
    ) -> None:
        self.domain = domain
        self.download_url = download_url
        # Whether the session asked for copies of what its user sends elsewhere (XEP-0280).
        self.carbons = carbons
        self.uid = uid
        self.jid = str(Jid(uid, domain, resource))
        self.tlim = tlim
        # Milliseconds, for the msg_time of envelopes the server makes up.
        self.now = now

    def user(self, uid: str, resource: str = "") -> str:
        return str(Jid(uid, self.domain, resource))


def tlim_element(location: str = "mobile") -> domish.Element:
    return element("tlim", NS_TLIM, location=location)


def _envelope_message(target: Target, frm: str, doc: Mapping[str, Any], id_: str) -> domish.Element:
    stanza = element("message", to=target.jid, type="chat", id=id_)
    stanza["from"] = frm
    stanza.addElement("body", content=envelope.dumps(doc))
    stanza.addChild(tlim_element())
    return stanza


def message(target: Target, d: Mapping[str, Any]) -> domish.Element:
    """A message (L{imd.core.messages.message_data}) for C{target}."""
    group = "gid" in d
    if group:
        frm = target.user(d["gid"], d["from"])
    else:
        frm = target.user(d["from"], d["from_res"])
    if target.tlim:
        doc = envelope.message(d)
        stanza = _envelope_message(target, frm, doc, d["msgid"])
        if group:
            stanza["type"] = "groupchat"
        return stanza
    stanza = element("message", to=target.jid, type="groupchat" if group else "chat", id=d["msgid"])
    stanza["from"] = frm
    # A recalled message keeps its place, not its words.
    stanza.addElement("body", content="" if d["recalled"] else envelope.plain_text(d["kind"], d["body"], target.download_url))
    if d["recalled"]:
        stanza.addElement((NS_RETRACT, "retracted"))["id"] = d["msgid"]
    else:
        # Ask for the receipts a stock client knows: they become core receipts.
        stanza.addElement((NS_RECEIPTS, "request"))
        stanza.addElement((NS_MARKERS, "markable"))
    return stanza


def _command_sender(target: Target, d: Mapping[str, Any]) -> str:
    """Who a receipt or recall is from: the user, or the user within its group."""
    return target.user(d["gid"], d["from"]) if "gid" in d else target.user(d["from"])


def copy(target: Target, d: Mapping[str, Any]) -> domish.Element | None:
    """
    A message the session's user sent from another session: for a tlim
    session the envelope as sent, for a stock client a XEP-0280 carbon
    when it enabled them.
    """
    group = "gid" in d
    peer = target.user(d["gid"]) if group else target.user(d["to"])
    sent = element("message", to=peer, type="groupchat" if group else "chat", id=d["msgid"])
    sent["from"] = target.user(target.uid, d["from_res"])
    if target.tlim:
        sent["to"] = target.jid
        sent.addElement("body", content=envelope.dumps(envelope.message(d)))
        sent.addChild(tlim_element())
        return sent
    if not target.carbons:
        return None
    sent.addElement("body", content="" if d["recalled"] else envelope.plain_text(d["kind"], d["body"], target.download_url))
    wrapper = element("message", to=target.jid, type=sent["type"])
    wrapper["from"] = target.user(target.uid)
    wrapper.addElement((NS_CARBONS, "sent")).addElement((NS_FORWARD, "forwarded")).addChild(sent)
    return wrapper


def _receipt(target: Target, d: Mapping[str, Any]) -> domish.Element:
    frm = _command_sender(target, d)
    if target.tlim:
        return _envelope_message(target, frm, envelope.receipt(d, target.uid, target.now), envelope.new_id())
    stanza = element("message", to=target.jid, id=envelope.new_id())
    stanza["from"] = frm
    if d["kind"] == "delivered":
        stanza.addElement((NS_RECEIPTS, "received"))["id"] = d["msgid"]
    else:
        stanza.addElement((NS_MARKERS, "displayed"))["id"] = d["msgid"]
    return stanza


def _recall(target: Target, d: Mapping[str, Any]) -> domish.Element:
    frm = _command_sender(target, d)
    if target.tlim:
        return _envelope_message(target, frm, envelope.recall(d, target.now), envelope.new_id())
    stanza = element("message", to=target.jid, type="groupchat" if "gid" in d else "chat", id=envelope.new_id())
    stanza["from"] = frm
    stanza.addElement((NS_RETRACT, "retract"))["id"] = d["msgid"]
    stanza.addElement("body", content="This message was retracted.")
    return stanza


def presence(target: Target, d: Mapping[str, Any]) -> domish.Element:
    stanza = element("presence", to=target.jid)
    stanza["from"] = target.user(d["from"], d["from_res"])
    if d["type"] == "leave":
        stanza["type"] = "unavailable"
    elif d["show"] in SHOWS:
        stanza.addElement("show", content=d["show"])
    return stanza


def roster_push(target: Target, friend: str, subscription: str) -> domish.Element:
    iq = element("iq", to=target.jid, type="set", id=f"push{next(_push_ids)}")
    item = iq.addElement((NS_ROSTER, "query")).addElement("item")
    item["jid"] = target.user(friend)
    item["subscription"] = subscription
    return iq


def roster_item(query: domish.Element, domain: str, friend: Any, group_names: Mapping[str, str]) -> None:
    """One friend (L{imd.store.roster.Friend}) under a roster C{query}."""
    item = query.addElement("item")
    item["jid"] = str(Jid(friend.fid, domain))
    item["subscription"] = "both"
    name = friend.remark or friend.name
    if name:
        item["name"] = name
    group = group_names.get(friend.gid)
    if group:
        item.addElement("group", content=group)


# -- jabber:iq:search (XEP-0055): one exact field, in a data form (XEP-0004)
# or, for old clients, as the <nick/> of the simple form.

SEARCH_FIELD = "q"
SEARCH_INSTRUCTIONS = "An exact user id or telephone: imd lists no users and matches no patterns."


def _field(parent: domish.Element, var: str, ftype: str | None = None, label: str | None = None,
           value: str | None = None) -> domish.Element:
    field = parent.addElement("field")
    field["var"] = var
    if ftype:
        field["type"] = ftype
    if label:
        field["label"] = label
    if value is not None:
        field.addElement("value", content=value)
    return field


def search_form(query: domish.Element) -> None:
    """The fields a client fills in, under the C{query} of a get's result."""
    query.addElement("instructions", content=SEARCH_INSTRUCTIONS)
    query.addElement("nick")
    form = query.addElement((NS_DATA, "x"))
    form["type"] = "form"
    form.addElement("instructions", content=SEARCH_INSTRUCTIONS)
    _field(form, "FORM_TYPE", "hidden", value=NS_SEARCH)
    _field(form, SEARCH_FIELD, "text-single", "User id or telephone (exact)").addElement("required")


def searched(query: domish.Element) -> tuple[str, bool]:
    """What a set asks for, and whether it came as a data form (then the answer is one too)."""
    form = first_child(query, NS_DATA, "x")
    if form is not None:
        for field in form.elements():
            if field.name == "field" and field.getAttribute("var") == SEARCH_FIELD:
                return text_of(first_child(field, NS_DATA, "value")), True
        return "", True
    return text_of(first_child(query, NS_SEARCH, "nick")), False


def search_result(query: domish.Element, domain: str, cards: list, as_form: bool) -> None:
    """The users found (L{imd.core.lookup.Card}s), under the C{query} of a set's result."""
    if not as_form:
        for card in cards:
            item = query.addElement("item")
            item["jid"] = str(Jid(card.uid, domain))
            item.addElement("nick", content=card.name)
        return
    form = query.addElement((NS_DATA, "x"))
    form["type"] = "result"
    _field(form, "FORM_TYPE", "hidden", value=NS_SEARCH)
    reported = form.addElement("reported")
    _field(reported, "jid", "jid-single", "JID")
    _field(reported, "name", "text-single", "Name")
    for card in cards:
        item = form.addElement("item")
        _field(item, "jid", value=str(Jid(card.uid, domain)))
        _field(item, "name", value=card.name)


def _request(target: Target, d: Mapping[str, Any]) -> domish.Element:
    stanza = element("presence", to=target.jid, type="subscribe", id=d["msgid"])
    stanza["from"] = target.user(d["from"])
    if d.get("note"):
        stanza.addElement("status", content=d["note"])
    return stanza


def _session(target: Target, e: Event) -> domish.Element | None:
    """What session subscribers receive (HTS-000/001/002); a stock client has no such stanza."""
    if not target.tlim:
        return None
    d = e.data
    if e.kind == events.GROUP_DATA:
        doc = envelope.session_added(d, target.uid, target.now)
    elif e.kind == events.GROUP_CHANGED:
        doc = envelope.session_modified(d, target.uid)
    elif e.kind in (events.GROUP_MEMBER_ADDED, events.GROUP_LEAVE):
        # A member joined or left by a design of invitations (seed 001's
        # long connection, the server API): the same change, made by that member.
        member = d["uid"] if e.kind == events.GROUP_MEMBER_ADDED else d["from"]
        joined = e.kind == events.GROUP_MEMBER_ADDED
        change = {"gid": d["gid"], "owner": member, "name": d["group_name"], "time": d["time"],
                  "added": [member] if joined else [], "removed": [] if joined else [member]}
        doc = envelope.session_modified(change, target.uid)
    else:
        doc = envelope.session_deleted(d, target.uid)
    return _envelope_message(target, target.user(d["gid"]), doc, doc["msg_id"])


_EVENTS: dict[str, Callable[[Target, Mapping[str, Any]], domish.Element | None]] = {
    events.MESSAGE: message,
    events.MESSAGE_COPY: copy,
    events.PRESENCE: presence,
    events.RECEIPT: _receipt,
    events.RECALL: _recall,
    events.ROSTER_ADDED: lambda t, d: roster_push(t, d["friend"], "both"),
    events.ROSTER_DELETED: lambda t, d: roster_push(t, d["friend"], "remove"),
    events.ROSTER_REQUEST: _request,
}


_SESSION_EVENTS = frozenset((
    events.GROUP_DATA, events.GROUP_CHANGED, events.GROUP_DELETED, events.GROUP_MEMBER_ADDED, events.GROUP_LEAVE,
))


def event(target: Target, e: Event) -> domish.Element | None:
    """C{e} as a stanza for C{target}; None: nothing this design shows."""
    if e.kind in _SESSION_EVENTS:
        return _session(target, e)
    render = _EVENTS.get(e.kind)
    return None if render is None else render(target, e.data)
