"""
The events core services hand to the hub, by kind, with their data.
Channels render them; the names are the contract between the two.

message        a 1:1 or group message for its recipients
message.copy   the same, for the sender's other sessions
roster.request a friend request for its addressee
roster.answer  the answer, for the requester
roster.added   {"frd"}: a friendship began
roster.deleted {"frd"}: a friendship ended
presence       {"type", "from", "from_res", "show", "to"?, "to_res"?}
group.invite   an invite for its addressee
group.data     a group and its members, for a new member
group.peer_add {"gid", "uid", "fname", "right", "join_time"} for the others
group.leave    {"msgid", "from", "gid"}: a member left
receipt        {"msgid", "from", "kind", "gid"?} for a message's sender
recall         {"msgid", "from", "to" | "gid"}
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
GROUP_PEER_ADD = "group.peer_add"
GROUP_LEAVE = "group.leave"
RECEIPT = "receipt"
RECALL = "recall"
