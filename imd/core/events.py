"""
The events core services hand to the hub, by kind, with their data.
Channels render them; the names are the contract between the two.

Every field is imd's own name, in no channel's vocabulary; times are
milliseconds.  Each wire family turns these into its own form in one
serializer module (imd/channels/*/serialize.py).

message              a 1:1 or group message for its recipients
                     (L{imd.core.messages.message_data}: id, msgid, from,
                     from_res, kind, body, time, client_time, recalled,
                     and to, or gid and seq)
message.copy         the same, for the sender's other sessions
roster.request       {"msgid", "from", "to", "note", "time"} for its addressee
roster.answer        {"msgid", "from", "to", "accept", "names"} for the
                     requester; names: how each side files the other
                     (requester_group, requester_remark, answerer_group,
                     answerer_remark), those given
roster.added         {"friend"}: a friendship began
roster.deleted       {"friend"}: a friendship ended
presence             {"type", "from", "from_res", "show", "to"?, "to_res"?}
group.invite         {"msgid", "from", "to", "gid", "name", "time"}
group.data           a group and its members, for a new member
                     (L{imd.core.groups.group_data}: gid, name, creator,
                     type, exitable, created_at, members)
group.member_added   a member (uid, name, role, joined_at), its gid,
                     group_name and the time, for the others
group.leave          {"msgid", "from", "gid", "group_name", "time"}: a member
                     left or was removed
group.changed        {"gid", "name", "owner", "added", "removed", "members",
                     "time", "group"}: the owner renamed a group or changed
                     its members, for its members before and after; group
                     is the group as it now is, with its members
                     (L{imd.core.groups.group_data})
group.deleted        {"gid", "owner", "time"}: the owner deleted or
                     dissolved a group, for its last members
receipt              {"msgid", "from", "kind", "gid"?} for a message's sender
recall               {"msgid", "from", "to" | "gid"}
session.end          {"reason"}: every session of the user is to end now
notice               a custom notification (L{imd.core.notices.notice_data}:
                     id (None when not kept), from, to | gid, body, badge, time)
"""

MESSAGE = "message"
MESSAGE_COPY = "message.copy"
ROSTER_REQUEST = "roster.request"
ROSTER_ANSWER = "roster.answer"
ROSTER_ADDED = "roster.added"
ROSTER_DELETED = "roster.deleted"
PRESENCE = "presence"
GROUP_INVITE = "group.invite"
GROUP_DATA = "group.data"
GROUP_MEMBER_ADDED = "group.member_added"
GROUP_LEAVE = "group.leave"
GROUP_CHANGED = "group.changed"
GROUP_DELETED = "group.deleted"
RECEIPT = "receipt"
RECALL = "recall"
NOTICE = "notice"
SESSION_END = "session.end"
