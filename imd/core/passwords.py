# -*- test-case-name: tests.test_accounts -*-
"""Password hashing with argon2id, off the reactor thread."""

from __future__ import annotations

from typing import Any

from argon2 import PasswordHasher as _Argon2
from argon2.exceptions import InvalidHashError, VerificationError
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool

from imd.core import scram


class PasswordHasher:
    """
    Hashes and verifies passwords on the reactor's thread pool: one argon2
    call takes tens of milliseconds by design, which must not stall every
    connection.
    """

    def __init__(self, reactor: Any, time_cost: int = 3, memory_kib: int = 65536) -> None:
        self._reactor = reactor
        self._argon2 = _Argon2(time_cost=time_cost, memory_cost=memory_kib, parallelism=1)

    def _run(self, fn, *args) -> Deferred:
        return deferToThreadPool(self._reactor, self._reactor.getThreadPool(), fn, *args)

    def hash(self, password: str) -> "Deferred[str]":
        return self._run(self._argon2.hash, password)

    def verify(self, password_hash: str | None, password: str) -> "Deferred[bool]":
        def check() -> bool:
            if not password_hash:
                # Same cost as a real check, so timing does not reveal
                # which accounts have no password.
                self._argon2.hash(password)
                return False
            try:
                return self._argon2.verify(password_hash, password)
            except (VerificationError, InvalidHashError):
                return False

        return self._run(check)

    def needs_rehash(self, password_hash: str) -> bool:
        return self._argon2.check_needs_rehash(password_hash)

    def scram_keys(self, password: str, iterations: int) -> "Deferred[list[scram.ScramKeys]]":
        """The SCRAM keys of C{password}, one per mechanism (PBKDF2: off the reactor too)."""
        return self._run(scram.derive_all, password, iterations)
