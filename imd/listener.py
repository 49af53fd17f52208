# -*- test-case-name: tests.test_server -*-
"""A listening endpoint as a service that knows (and logs) its address."""

from __future__ import annotations

from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger
from twisted.python.failure import Failure

log = Logger()


class ListenerService(Service):
    """
    Listens on an endpoint string.  It listens in privilegedStartService,
    as twistd expects of a bound port, and a failure to listen is raised
    there, which stops start-up instead of leaving a server that serves
    nothing.
    """

    def __init__(self, name: str, description: str, factory: Any, reactor: Any) -> None:
        self.setName(name)
        self.description = description
        self.factory = factory
        self.port: Any = None
        self._reactor = reactor

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        result: list = []
        d = serverFromString(self._reactor, self.description).listen(self.factory)
        d.addBoth(result.append)
        if not result:
            raise RuntimeError(f"{self.name}: {self.description} did not listen at once")
        if isinstance(result[0], Failure):
            raise SystemExit(
                f"imd: cannot listen for {self.name} on {self.description}: "
                f"{result[0].getErrorMessage()}"
            )
        self.port = result[0]
        host = self.port.getHost()
        log.info(
            "{listener} listening on {host}:{port}",
            listener=self.name,
            host=getattr(host, "host", host),
            port=getattr(host, "port", ""),
        )

    def startService(self) -> None:
        if self.port is None:
            self.privilegedStartService()
        super().startService()

    def stopService(self) -> Deferred | None:
        super().stopService()
        port, self.port = self.port, None
        if port is not None:
            return port.stopListening()
        return None

    @property
    def address(self) -> tuple[str, int]:
        host = self.port.getHost()
        return host.host, host.port
