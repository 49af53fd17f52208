# -*- test-case-name: tests.test_logins -*-
"""
Failed logins slow their source down, with a backoff that doubles, while
the right password from an address that has not been failing still works.

Three counts of failures, each over C{limits.login_window} seconds:

- of one account from one address: past C{limits.login_failures}, that
  address may not try that account again until a lock runs out, 1 s after
  the first failure past the limit, doubling with each more (at most the
  window);
- of one account from any address: past ten times that, every address
  that has failed on the account at least once is locked out of it the
  same way (a guesser with many addresses gets one try from each);
- of one address on any account: past C{limits.login_address_failures},
  the address is locked out of every account.

The counts live in the hub's counters: this process's memory, or Redis,
shared by every instance, when the hub is linked.
"""

from __future__ import annotations

import math
from typing import Any

from twisted.internet.defer import inlineCallbacks, succeed
from twisted.logger import Logger

from imd.errors import RateLimited

log = Logger()


class LoginGuard:
    def __init__(self, counters: Any, limits: Any, metrics: Any = None) -> None:
        self._counters = counters
        self._limits = limits
        self._metrics = metrics

    @staticmethod
    def _keys(account: str, address: str | None) -> tuple[str, str | None, str | None]:
        pair = f"login:pair:{account}:{address}" if address else None
        source = f"login:addr:{address}" if address else None
        return f"login:acct:{account}", pair, source

    @inlineCallbacks
    def check(self, account: str, address: str | None, path: str = "login"):
        """Refuse with L{RateLimited} if this attempt must wait."""
        acct, pair, source = self._keys(account, address)
        keys = [f"lock:{k}" for k in (pair, source) if k]
        if pair is not None:
            # The account's own lock binds only addresses that have failed on it.
            failed_here = yield self._counters.count(pair)
            if failed_here:
                keys.append(f"lock:{acct}")
        wait = yield self._counters.locked(keys)
        if wait > 0:
            if self._metrics is not None:
                self._metrics.logins_refused.labels(path).inc()
            log.info("login to {account} from {address} refused for {s} s", account=account, address=address, s=math.ceil(wait))
            raise RateLimited(f"too many failed logins; try again in {math.ceil(wait)} s")

    @inlineCallbacks
    def failed(self, account: str, address: str | None, path: str = "login"):
        if self._metrics is not None:
            self._metrics.logins_failed.labels(path).inc()
        limits = self._limits
        window = limits.login_window
        acct, pair, source = self._keys(account, address)
        for key, limit in ((pair, limits.login_failures), (acct, 10 * limits.login_failures), (source, limits.login_address_failures)):
            if key is None:
                continue
            n = yield self._counters.incr(key, window)
            if n >= limit:
                yield self._counters.lock(f"lock:{key}", min(window, 2 ** (n - limit)))

    def succeeded(self, account: str, address: str | None, path: str = "login"):
        """The right password: this address starts afresh on this account."""
        if self._metrics is not None:
            self._metrics.logins.labels(path).inc()
        _, pair, _ = self._keys(account, address)
        if pair is None:
            return succeed(None)
        return self._counters.forget([pair, f"lock:{pair}"])
