# -*- test-case-name: tests.test_server -*-
"""
One place that builds every component of a server, lazily, from a
:class:`~imd.config.Config` and a reactor, and assembles the service tree
``twistd`` runs.  Tests build a Server with their own config and reactor.
"""

from __future__ import annotations

import gc
import sys
from functools import cached_property
from typing import Any

from twisted.application.internet import TimerService
from twisted.application.service import MultiService, Service
from twisted.internet.defer import DeferredList
from twisted.logger import Logger
from twisted.web.server import Site

from imd.config import Config
from imd.listener import ListenerService

log = Logger()
TOKEN_PURGE_INTERVAL = 3600
# Seconds a thread may hold the GIL while another waits for it (see make_service).
GIL_SWITCH_INTERVAL = 0.0002
# The garbage collector's thresholds (see make_service): a young
# collection after 50,000 allocations instead of 700.
GC_THRESHOLDS = (50_000, 20, 100)


class StoreService(Service):
    """
    Migrates (when told to) before anything listens, and starts the
    store's threads only once every listener has bound: a server that
    cannot listen then exits instead of hanging on threads it started.
    """

    def __init__(self, store: Any, migrate: bool) -> None:
        self.setName("store")
        self.store = store
        self.migrate = migrate

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        if self.migrate:
            try:
                self.store.migrate()
            except Exception as e:
                raise SystemExit(f"imd: cannot migrate the database: {e}") from None

    def startService(self) -> None:
        super().startService()
        self.store.start()

    def stopService(self):
        super().stopService()
        return self.store.stop()


class HubService(Service):
    """Links the hub to the other instances once every listener is bound."""

    def __init__(self, server: "Server") -> None:
        self.setName("hub")
        self.server = server

    def startService(self) -> None:
        super().startService()
        # Named now that the listeners are bound: the default uses the HTTP port.
        instance = self.server.instance_id
        log.info("instance {instance} started", instance=instance)
        self.server.hub.start(instance)
        self.server.announce_web()

    def stopService(self):
        super().stopService()
        return self.server.hub.stop()


class Server:
    def __init__(self, config: Config, reactor: Any = None) -> None:
        if reactor is None:
            from twisted.internet import reactor
        self.config = config
        self.reactor = reactor

    @cached_property
    def metrics(self):
        from imd.metrics import Metrics

        # Late: the hub reports to the metrics too.
        return Metrics(lambda: self.hub.session_counts())

    @cached_property
    def store(self):
        from imd.store.store import Store

        return Store(
            self.config.database.url,
            self.config.database.pool_size,
            reactor=self.reactor,
            observer=self.metrics.observe_store,
            checkpoint_pages=self.config.database.sqlite_checkpoint_pages,
            process=self.config.database.uses_store_process,
            process_started=self.metrics.store_process_starts.inc,
        )

    @cached_property
    def hub(self):
        if not self.config.redis.url:
            from imd.hub.local import LocalHub

            return LocalHub()
        from imd.hub.redis import RedisHub

        return RedisHub(
            self.config.redis.url,
            self.reactor,
            prefix=self.config.redis.prefix,
            heartbeat=self.config.redis.heartbeat,
            metrics=self.metrics,
        )

    @property
    def instance_id(self) -> str:
        if self.config.instance.id:
            return self.config.instance.id
        from imd.hub.redis import default_instance_id

        port = None
        try:
            port = self.address("http")[1]
        except Exception:
            pass
        return default_instance_id(port)

    @cached_property
    def sms_gateway(self):
        from imd.core.sms import gateway_for

        return gateway_for(self.config.sms.mode, self.config.sms.url)

    @cached_property
    def accounts(self):
        from imd.core.accounts import AccountService
        from imd.core.logins import LoginGuard

        guard = LoginGuard(self.hub.counters, self.config.limits, self.metrics)
        return AccountService(
            self.store,
            self.config.auth,
            self.config.sms,
            self.sms_gateway,
            self.reactor,
            scram_iterations=self.config.xmpp.scram_iterations,
            guard=guard,
            hub=self.hub,
        )

    @cached_property
    def session_reports(self):
        from imd.core.sessions import SessionReports

        return SessionReports(self.store, self.reactor, enabled=bool(self.config.webhooks.url))

    @cached_property
    def presence(self):
        from imd.core.presence import PresenceService

        return PresenceService(self.store, self.hub)

    @cached_property
    def roster(self):
        from imd.core.roster import RosterService

        return RosterService(self.store, self.hub, self.reactor)

    @cached_property
    def groups(self):
        from imd.core.groups import GroupService

        return GroupService(self.store, self.hub, self.reactor, self.presence)

    @cached_property
    def messages(self):
        from imd.core.messages import MessageService

        return MessageService(
            self.store, self.hub, self.config.messages, self.reactor, self.metrics,
            outbox="message" if self.config.webhooks.url else None,
        )

    @cached_property
    def notices(self):
        from imd.core.notices import NoticeService

        return NoticeService(self.store, self.hub, self.reactor, report=bool(self.config.webhooks.url))

    @cached_property
    def apps(self):
        from imd.core.apps import AppService

        api = self.config.serverapi
        return AppService(self.store, (api.app_key, api.app_secret), self.reactor)

    @cached_property
    def profiles(self):
        from imd.core.profiles import ProfileService

        return ProfileService(self.store, self.reactor, files=self.files)

    @cached_property
    def files(self):
        from imd.core.files import FileService
        from imd.files.storage import LocalStorage

        storage = LocalStorage(self.config.files.dir, self.reactor)
        return FileService(self.store, storage, self.config.files, self.reactor)

    @cached_property
    def lookup(self):
        from imd.core.lookup import LookupService

        return LookupService(self.store, self.hub.counters, self.config.limits)

    @cached_property
    def directory(self):
        from imd.core.directory import DirectoryService

        return DirectoryService(self.store)

    @cached_property
    def http_app(self):
        """The HTTP listener's root: every API family, each with its own error form."""
        from imd.channels.longconn import files, qid, websocket
        from imd.channels.methodapi import routes
        from imd.channels.native import api as native
        from imd.channels.serverapi import routes as serverapi
        from imd.channels.shared.web import Root
        from imd.channels.web import admin, routes as web
        from imd.channels.xmpp import routes as sessions

        native_app = native.make_app(self)
        families = [
            native_app,
            qid.make_app(self),
            files.make_app(self),
            websocket.make_app(self),
            routes.make_app(self),
            sessions.make_app(self),
            serverapi.make_app(self),
            admin.make_app(self),
            # Last: a method no route on / takes is answered by the method API.
            web.make_app(self),
        ]
        return Root(families, fallback=native_app, requests=self.metrics.http_requests)

    @cached_property
    def log_tail(self):
        """The latest log lines, for the admin console."""
        from imd.logtail import LogTail

        return LogTail()

    @cached_property
    def deliverer(self):
        """Sends the outbox's rows as message-copy webhooks."""
        from imd.channels.serverapi.webhooks import WebhookSender
        from imd.core.delivery import OutboxDeliverer

        return OutboxDeliverer(
            self.store.outbox,
            WebhookSender(self),
            self.config.webhooks,
            self.reactor,
            lambda: self.instance_id,
            self.metrics,
        )

    def make_service(self) -> MultiService:
        from imd.channels.longconn.protocol import LongConnFactory
        from imd.channels.methodapi.socket import SocketFactory
        from imd.channels.xmpp.protocol import XmppFactory

        # The store thread lets go of the GIL for each SQLite step and each
        # fsync, then waits for the reactor to give it back: by default up
        # to 5 ms each time, and the reactor waits as long for it.  A
        # shorter interval measured more messages a second and a lower p99
        # (docs/benchmarks.rst).
        sys.setswitchinterval(GIL_SWITCH_INTERVAL)
        # Every frame allocates Deferreds, dicts and tuples that plain
        # reference counting frees; the default cyclic collection after
        # every 700 of them took a tenth of the reactor's time, for
        # garbage the reference counts had already freed
        # (docs/benchmarks.rst, round 5).
        gc.set_threshold(*GC_THRESHOLDS)
        self.service = top = MultiService()
        self.log_tail.setServiceParent(top)
        StoreService(self.store, self.config.database.migrate_on_start).setServiceParent(top)
        if self.config.http.endpoint:
            from imd.channels.shared.accesslog import access_log_line
            from imd.channels.shared.request import ImdChannel, ImdRequest

            site = Site(self.http_app, requestFactory=ImdRequest, logFormatter=access_log_line, reactor=self.reactor)
            site.protocol = ImdChannel
            site.displayTracebacks = False
            limits = self.config.limits
            site.header_timeout, site.min_body_rate = limits.http_header_timeout, limits.http_min_body_rate
            site.count_error = lambda code: self.metrics.errors.labels("http", code).inc()
            # Each route's limit, so a bigger body is refused before it is stored.
            root, default = self.http_app, self.config.http.max_body
            site.body_limit = lambda target: root.body_limit(target, default)
            ListenerService("http", self.config.http.endpoint, site, self.reactor).setServiceParent(top)
        # Presence listens to the hub from the start, before any session.
        self.presence
        for name, endpoint, factory in (
            ("longconn", self.config.longconn.endpoint, LongConnFactory),
            ("socket", self.config.socket.endpoint, SocketFactory),
            ("xmpp", self.config.xmpp.endpoint, XmppFactory),
        ):
            if endpoint:
                self.metrics.serve(name)
                ListenerService(name, endpoint, factory(self), self.reactor).setServiceParent(top)
        HubService(self).setServiceParent(top)
        if self.config.webhooks.url:
            self.deliverer.setServiceParent(top)
        purge = TimerService(TOKEN_PURGE_INTERVAL, self._purge_tokens)
        purge.clock = self.reactor
        purge.setServiceParent(top)
        return top

    def claim_once(self, key: str, ttl: int):
        """
        Deferred True if C{key} is claimed for the first time within C{ttl}
        s: across the cluster through Redis when there is one, else in the
        database, so that a claim outlives a restart.
        """
        if self.config.redis.url:
            return self.hub.claim_once(key, ttl)
        now = int(self.reactor.seconds() * 1000)
        return self.store.claims.claim(key, now, now + ttl * 1000)

    def announce_web(self) -> None:
        """Log the URL of the web chat, for the person who just started the server."""
        if not self.config.http.endpoint:
            return
        host, port = self.address("http")
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        log.info("web chat: open http://{host}:{port}/ in a browser (admin console: /admin/)", host=host, port=port)

    def address(self, listener: str) -> tuple[str, int]:
        """(host, port) a started listener is bound to: tests listen on port 0."""
        return self.service.getServiceNamed(listener).address

    def _purge_tokens(self):
        """
        Expired tokens and claims, and notifications received long ago,
        handed to the store at once: a purge queued only after another had
        finished could meet a store already stopping, and hold up the stop.
        """
        return DeferredList([
            self._purged("expired tokens", self.store.tokens.purge_expired(int(self.reactor.seconds() * 1000))),
            self._purged("expired claims", self.store.claims.purge_expired(int(self.reactor.seconds() * 1000))),
            self._purged("received notifications", self.notices.purge_received()),
            self._purged("unfinished uploads", self.files.purge_unfinished().addCallback(self._count_purged_uploads)),
        ])

    def _count_purged_uploads(self, n: int) -> int:
        self.metrics.unfinished_uploads_purged.inc(n)
        return n

    def _purged(self, what: str, d):
        def done(n: int) -> None:
            if n:
                log.info("purged {n} {what}", n=n, what=what)

        return d.addCallbacks(done, lambda f: log.failure("purging {what}", f, what=what))
