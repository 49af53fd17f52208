# -*- test-case-name: tests.test_web_admin -*-
"""The server's latest log lines, kept in memory for the admin console."""

from __future__ import annotations

from twisted.application.service import Service
from twisted.logger import LimitedHistoryLogObserver, formatEvent, globalLogPublisher

LINES = 500


class LogTail(Service):
    """Listens to the log while the server runs; L{lines} gives the latest."""

    def __init__(self, size: int = LINES, publisher=globalLogPublisher) -> None:
        self.setName("log tail")
        self._history = LimitedHistoryLogObserver(size)
        self._publisher = publisher

    def startService(self) -> None:
        super().startService()
        self._publisher.addObserver(self._history)

    def stopService(self) -> None:
        super().stopService()
        self._publisher.removeObserver(self._history)

    def lines(self, limit: int = LINES) -> list[dict]:
        """The latest C{limit} events, oldest first: time (s), level and text."""
        out: list[dict] = []

        def keep(event: dict) -> None:
            level = event.get("log_level")
            out.append({
                "time": event.get("log_time"),
                "level": level.name if level is not None else "",
                "system": event.get("log_namespace", ""),
                "text": formatEvent(event),
            })

        self._history.replayTo(keep)
        return out[-limit:]
