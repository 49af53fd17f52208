# -*- test-case-name: tests.test_logins -*-
"""
Counters and locks that expire (failed logins): in this process's memory,
or in Redis so that every instance shares them.  Every method returns a
Deferred; times are seconds.
"""

from __future__ import annotations

from typing import Any, Iterable

from twisted.internet.defer import Deferred, inlineCallbacks, succeed
from twisted.logger import Logger

log = Logger()
# Expired entries are swept every this many writes, so memory stays bounded
# by the keys live within their windows.
SWEEP_EVERY = 1000


class MemoryCounters:
    def __init__(self, clock: Any) -> None:
        self._clock = clock
        self._counts: dict[str, tuple[int, float]] = {}
        self._locks: dict[str, float] = {}
        self._writes = 0

    def _swept(self) -> float:
        now = self._clock.seconds()
        self._writes += 1
        if self._writes % SWEEP_EVERY == 0:
            self._counts = {k: v for k, v in self._counts.items() if v[1] > now}
            self._locks = {k: v for k, v in self._locks.items() if v > now}
        return now

    def incr(self, key: str, ttl: int) -> "Deferred[int]":
        """The count of C{key} after one more; it expires C{ttl} s after its first."""
        now = self._swept()
        n, expires = self._counts.get(key, (0, 0.0))
        if expires <= now:
            n, expires = 0, now + ttl
        self._counts[key] = (n + 1, expires)
        return succeed(n + 1)

    def count(self, key: str) -> "Deferred[int]":
        n, expires = self._counts.get(key, (0, 0.0))
        return succeed(n if expires > self._clock.seconds() else 0)

    def lock(self, key: str, seconds: float) -> "Deferred[None]":
        now = self._swept()
        self._locks[key] = max(self._locks.get(key, 0.0), now + seconds)
        return succeed(None)

    def locked(self, keys: Iterable[str]) -> "Deferred[float]":
        """Seconds until the last of C{keys}' locks runs out (0: none is locked)."""
        now = self._clock.seconds()
        return succeed(max([self._locks.get(k, 0.0) - now for k in keys] + [0.0]))

    def forget(self, keys: Iterable[str]) -> "Deferred[None]":
        for key in keys:
            self._counts.pop(key, None)
            self._locks.pop(key, None)
        return succeed(None)


class RedisCounters:
    """
    The same in Redis (under the hub's prefix), while the hub's publisher
    is connected; in memory meanwhile, so an outage never lifts the limits
    of this instance.
    """

    def __init__(self, hub: Any, clock: Any) -> None:
        self._hub = hub
        self._memory = MemoryCounters(clock)

    def _redis(self) -> Any:
        return self._hub.redis_commands()

    def _key(self, key: str) -> str:
        return f"{self._hub.prefix}:{key}"

    @inlineCallbacks
    def _either(self, remote, local):
        redis = self._redis()
        if redis is None:
            return (yield local())
        try:
            return (yield remote(redis))
        except Exception as e:
            log.warn("hub: counters in memory for now; Redis failed: {error}", error=e)
            return (yield local())

    def incr(self, key: str, ttl: int) -> "Deferred[int]":
        @inlineCallbacks
        def remote(redis):
            n = yield redis.incr(self._key(key))
            if n == 1:
                yield redis.expire(self._key(key), ttl)
            return n

        return self._either(remote, lambda: self._memory.incr(key, ttl))

    def count(self, key: str) -> "Deferred[int]":
        @inlineCallbacks
        def remote(redis):
            return int((yield redis.get(self._key(key))) or 0)

        return self._either(remote, lambda: self._memory.count(key))

    def lock(self, key: str, seconds: float) -> "Deferred[None]":
        return self._either(
            lambda redis: redis.set(self._key(key), "1", expire=max(1, int(seconds))),
            lambda: self._memory.lock(key, seconds),
        )

    def locked(self, keys: Iterable[str]) -> "Deferred[float]":
        keys = list(keys)

        @inlineCallbacks
        def remote(redis):
            longest = 0.0
            for key in keys:
                longest = max(longest, float((yield redis.ttl(self._key(key)))))
            return longest

        return self._either(remote, lambda: self._memory.locked(keys))

    def forget(self, keys: Iterable[str]) -> "Deferred[None]":
        keys = list(keys)
        self._memory.forget(keys)
        return self._either(lambda redis: redis.delete([self._key(k) for k in keys]), lambda: succeed(None))
