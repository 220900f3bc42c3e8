"""A bounded queue between sources and the engine. Drops are counted, never silent."""

from __future__ import annotations

import asyncio
import logging

from daemon.core.events import Event
from daemon.telemetry.metrics import Metrics

log = logging.getLogger("remedyd.bus")


class Bus:
    def __init__(self, metrics: Metrics, maxsize: int = 10_000) -> None:
        self._queue: asyncio.Queue[Event] = asyncio.Queue(maxsize)
        self._metrics = metrics

    def emit(self, event: Event) -> bool:
        """Never blocks a source: a full queue drops the newest event and says so."""
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self._metrics.queue_drops.labels(event.source).inc()
            log.warning("queue full: dropped %s %s event for %s", event.source, event.action,
                        event.subject.key)
            return False
        self._metrics.queue_depth.set(self._queue.qsize())
        return True

    async def get(self) -> Event:
        event = await self._queue.get()
        self._metrics.queue_depth.set(self._queue.qsize())
        return event

    def get_nowait(self) -> Event | None:
        try:
            event = self._queue.get_nowait()
        except asyncio.QueueEmpty:
            return None
        self._metrics.queue_depth.set(self._queue.qsize())
        return event

    def qsize(self) -> int:
        return self._queue.qsize()
