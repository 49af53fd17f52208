# -*- test-case-name: tests.test_http -*-
"""``/healthz`` and ``/metrics``: what operators and load balancers read."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from prometheus_client.twisted import MetricsResource
from twisted.internet.defer import inlineCallbacks
from twisted.logger import Logger

from imd import __version__
from imd.channels.shared.httpjson import write_json

if TYPE_CHECKING:
    from imd.server import Server

log = Logger()
PING_TIMEOUT = 5


def install(app, server: "Server") -> None:
    @app.route("/healthz", methods=["GET", "HEAD"])
    @inlineCallbacks
    def healthz(request):
        started = time.perf_counter()
        store = {"status": "ok", "backend": server.store.db.dialect}
        try:
            d = server.store.ping()
            d.addTimeout(PING_TIMEOUT, server.reactor)
            yield d
            store["latency_ms"] = round((time.perf_counter() - started) * 1000, 3)
        except Exception as e:
            log.warn("health check: store unreachable: {error}", error=e)
            store.update(status="unreachable", error=str(e).splitlines()[0] if str(e) else repr(e))
        healthy = store["status"] == "ok"
        body = {
            "status": "ok" if healthy else "unavailable",
            "version": __version__,
            "instance": server.instance_id,
            "store": store,
        }
        if server.config.redis.url:
            # Without Redis this instance still serves its own users (and
            # commits everything), so it stays in the load balancer: 200.
            linked = server.hub.healthy
            body["redis"] = {"status": "ok" if linked else "degraded"}
            if healthy and not linked:
                body["status"] = "degraded"
        return write_json(request, body, 200 if healthy else 503)

    @app.route("/metrics", methods=["GET"])
    def metrics(request):
        return MetricsResource(server.metrics.registry)
