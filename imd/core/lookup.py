# -*- test-case-name: tests.test_lookup -*-
"""
Finding a user to talk to, across designs: by exact user id or exact
telephone, never by listing.

A seed-004 user's id is 32 generated hex digits that nobody types, and
seed 001 names a peer only by id, so a user of one design could not start
a conversation with a user of the other.  This is the one rule every
channel's lookup calls:

- the query is matched exactly, as a user id and as a telephone; no prefix,
  no pattern, no list of users;
- the answer is the public card (id, display name, avatar), never the
  telephone of the user found: asking by id does not reveal a number;
- a disabled account is not found;
- each user may ask C{limits.lookups_per_minute} times a minute (across
  instances when the hub is linked), and every lookup is logged with who
  asked and whether it found someone, so enumerating telephones is slow
  and visible.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import inlineCallbacks, returnValue
from twisted.logger import Logger

from imd.core.accounts import TELEPHONE_RE, UID_RE
from imd.errors import InvalidField, RateLimited

log = Logger()
MAX_QUERY = 50


@dataclass(frozen=True)
class Card:
    """What anyone signed in may learn about a user they can name exactly."""

    uid: str
    name: str
    avatar: str


class LookupService:
    def __init__(self, store: Any, counters: Any, limits: Any) -> None:
        self._users = store.users
        self._counters = counters
        self._per_minute = limits.lookups_per_minute

    @inlineCallbacks
    def find(self, asker: str, query: Any):
        """
        The users whose id or telephone is exactly C{query} (at most two:
        one by id, one by telephone), as L{Card}s; C{asker} is counted
        against its rate.
        """
        if not isinstance(query, str) or not query.strip():
            raise InvalidField("give a user id or a telephone to look up")
        query = query.strip()
        if len(query) > MAX_QUERY:
            raise InvalidField(f"a user id or telephone is at most {MAX_QUERY} characters")
        by_id, by_telephone = UID_RE.match(query) is not None, TELEPHONE_RE.match(query) is not None
        if not (by_id or by_telephone):
            raise InvalidField("give an exact user id or telephone (no patterns)")
        n = yield self._counters.incr(f"lookup:{asker}", 60)
        if n > self._per_minute:
            log.warn("{asker} is over {limit} user lookups a minute", asker=asker, limit=self._per_minute)
            raise RateLimited(f"at most {self._per_minute} user lookups a minute; try again later")
        found = []
        if by_id:
            found.append((yield self._users.get(query)))
        if by_telephone:
            found.append((yield self._users.get_by_telephone(query)))
        cards = []
        for user in found:
            if user is not None and not user.disabled and user.uid not in [c.uid for c in cards]:
                cards.append(Card(user.uid, user.name, user.avatar))
        how = " or ".join(kind for kind, asked in (("id", by_id), ("telephone", by_telephone)) if asked)
        log.info("{asker} looked up a user by {how}: {n} found", asker=asker, how=how, n=len(cards))
        returnValue(cards)
