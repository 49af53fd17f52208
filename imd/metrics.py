# -*- test-case-name: tests.test_http -*-
"""
Prometheus metrics of one server, in a registry of its own.

Series labelled by a TCP channel exist only for the channels the server
listens on (L{Metrics.serve}); every label value is from a bounded set (a
route's pattern, never a raw path).
"""

from __future__ import annotations

from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, PlatformCollector, ProcessCollector
from prometheus_client.core import GaugeMetricFamily


class _SessionCollector:
    def __init__(self, counts: Callable[[], dict[str, int]], served: set[str]) -> None:
        self._counts = counts
        self._served = served

    def collect(self):
        family = GaugeMetricFamily("imd_sessions", "Live authenticated sessions", labels=["channel"])
        counts = dict.fromkeys(self._served, 0)
        counts.update(self._counts())
        for channel, n in sorted(counts.items()):
            family.add_metric([channel], n)
        yield family


class Metrics:
    def __init__(self, session_counts: Callable[[], dict[str, int]]) -> None:
        self.registry = CollectorRegistry()
        self._served: set[str] = set()
        self.registry.register(_SessionCollector(session_counts, self._served))
        # Memory, CPU, open files and start time of this process; Python's version.
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self.connections_opened = Counter(
            "imd_connections_opened", "TCP connections accepted", ["channel"], registry=self.registry
        )
        self.connections_closed = Counter(
            "imd_connections_closed", "TCP connections ended, by either side", ["channel"], registry=self.registry
        )
        self.http_requests = Counter(
            "imd_http_requests", "HTTP requests answered, by route pattern and status", ["route", "status"],
            registry=self.registry,
        )
        self.unfinished_uploads_purged = Counter(
            "imd_unfinished_uploads_purged", "Unfinished uploads deleted after files.unfinished_ttl",
            registry=self.registry,
        )
        self.logins = Counter(
            "imd_logins", "Logins whose credentials were right", ["path"], registry=self.registry
        )
        self.logins_failed = Counter(
            "imd_logins_failed", "Logins whose credentials were wrong", ["path"], registry=self.registry
        )
        self.messages = Counter(
            "imd_messages", "Messages committed", ["kind"], registry=self.registry
        )
        self.errors = Counter(
            "imd_errors", "Errors answered to clients", ["channel", "code"], registry=self.registry
        )
        self.logins_refused = Counter(
            "imd_logins_refused", "Logins refused before their credentials were checked, after too many failures",
            ["path"], registry=self.registry,
        )
        self.store_seconds = Histogram(
            "imd_store_seconds",
            "Store transaction latency",
            ["op"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5),
            registry=self.registry,
        )
        self.store_failures = Counter(
            "imd_store_failures", "Store transactions that failed", ["op"], registry=self.registry
        )
        self.store_process_starts = Counter(
            "imd_store_process_starts",
            "Store processes started: one at start, one more each time one ended and was replaced",
            registry=self.registry,
        )

        self.redis_published = Counter(
            "imd_redis_published", "Events published to other instances", registry=self.registry
        )
        self.redis_received = Counter(
            "imd_redis_received", "Events received from other instances", registry=self.registry
        )
        self.redis_skipped = Counter(
            "imd_redis_skipped", "Events not published because Redis was down", registry=self.registry
        )

        self.outbox_depth = Gauge(
            "imd_outbox_depth", "Outbox rows not delivered yet (dead ones apart)", registry=self.registry
        )
        self.outbox_dead = Gauge("imd_outbox_dead", "Outbox rows given up on", registry=self.registry)
        self.outbox_oldest_seconds = Gauge(
            "imd_outbox_oldest_seconds", "Age of the oldest undelivered outbox row", registry=self.registry
        )
        self.outbox_delivered = Counter(
            "imd_outbox_delivered", "Outbox rows delivered by this instance", registry=self.registry
        )
        self.outbox_retried = Counter(
            "imd_outbox_retried", "Failed outbox deliveries, to be tried again", registry=self.registry
        )

    def serve(self, channel: str) -> None:
        """The server listens on C{channel}: its series exist from now on, at zero until used."""
        self._served.add(channel)
        self.connections_opened.labels(channel)
        self.connections_closed.labels(channel)

    def observe_store(self, name: str, seconds: float, ok: bool) -> None:
        self.store_seconds.labels(name).observe(seconds)
        if not ok:
            self.store_failures.labels(name).inc()
