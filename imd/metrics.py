# -*- test-case-name: tests.test_http -*-
"""Prometheus metrics of one server, in a registry of its own."""

from __future__ import annotations

from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily

CHANNELS = ("longconn", "socket", "xmpp")


class _SessionCollector:
    def __init__(self, counts: Callable[[], dict[str, int]]) -> None:
        self._counts = counts

    def collect(self):
        family = GaugeMetricFamily("imd_sessions", "Live authenticated sessions", labels=["channel"])
        counts = dict.fromkeys(CHANNELS, 0)
        counts.update(self._counts())
        for channel, n in sorted(counts.items()):
            family.add_metric([channel], n)
        yield family


class Metrics:
    def __init__(self, session_counts: Callable[[], dict[str, int]]) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_SessionCollector(session_counts))
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

    def observe_store(self, name: str, seconds: float, ok: bool) -> None:
        self.store_seconds.labels(name).observe(seconds)
        if not ok:
            self.store_failures.labels(name).inc()
