"""The aggregate of every repository, over one :class:`Database`."""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet.defer import Deferred, succeed

from imd.store import migrate
from imd.store.claims import ClaimStore
from imd.store.database import DEFAULT_CHECKPOINT_PAGES, Database, Observer
from imd.store.directory import DirectoryStore
from imd.store.files import FileStore
from imd.store.groups import GroupStore
from imd.store.apps import AppStore
from imd.store.messages import MessageStore
from imd.store.missed import MissedStore
from imd.store.notices import NoticeStore
from imd.store.outbox import OutboxStore
from imd.store.profiles import ProfileStore
from imd.store.roster import RosterStore
from imd.store.users import SmsCodeStore, TokenStore, UserStore


class Store:
    def __init__(
        self,
        url: str,
        pool_size: int = 5,
        reactor: Any = None,
        observer: Observer | None = None,
        checkpoint_pages: int = DEFAULT_CHECKPOINT_PAGES,
        process: bool = False,
        process_started: Callable[[], None] | None = None,
    ) -> None:
        """
        C{process}: batches of messages run in a process of their own
        (L{imd.store.process}); C{process_started()} is called each time
        one starts.
        """
        self.db = Database(url, pool_size, reactor=reactor, observer=observer, checkpoint_pages=checkpoint_pages)
        self.process = None
        if process:
            from imd.store.process import StoreProcess

            self.process = StoreProcess(url, self.db.reactor, checkpoint_pages, observer, started=process_started)
        self.users = UserStore(self.db)
        self.tokens = TokenStore(self.db)
        self.sms_codes = SmsCodeStore(self.db)
        self.roster = RosterStore(self.db)
        self.groups = GroupStore(self.db)
        self.messages = MessageStore(self.db, self.process)
        self.missed = MissedStore(self.db)
        self.outbox = OutboxStore(self.db)
        self.apps = AppStore(self.db)
        self.notices = NoticeStore(self.db)
        self.profiles = ProfileStore(self.db)
        self.directory = DirectoryStore(self.db)
        self.files = FileStore(self.db)
        self.claims = ClaimStore(self.db)

    def migrate(self) -> None:
        """Upgrade the schema to the newest revision. Blocking."""
        migrate.upgrade(self.db.url)

    def ping(self) -> Deferred:
        """Fires once the database has answered, and the store process, if any."""
        d = self.db.ping()
        if self.process is not None:
            d.addCallback(lambda _: self.process.ping())
        return d

    def start(self) -> None:
        self.db.start()
        if self.process is not None:
            self.process.start()

    def stop(self) -> Deferred:
        """Fires once the store process, if any, has answered what it had; the database's threads stop then."""
        self.messages.flush()
        d = self.process.stop() if self.process is not None else succeed(None)
        d.addCallback(lambda _: self.db.stop())
        return d
