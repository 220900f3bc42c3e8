"""Root tasks under supervision, as kopf guards its own: nothing dies unnoticed.

A task that raises is logged with its traceback, counted, and restarted with
backoff; one that keeps crashing (more than `max_crashes` within `window`) stops
the daemon with a non-zero exit, so systemd or Kubernetes restarts the process.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from daemon.aio import Backoff
from daemon.telemetry.metrics import Metrics

log = logging.getLogger("remedyd.supervisor")


@dataclass
class _Supervised:
    name: str
    factory: Callable[[], Awaitable[None]]
    task: asyncio.Task[None] | None = None
    running: bool = False
    crashes: deque[float] = field(default_factory=deque)
    total_crashes: int = 0
    last_error: str | None = None


class Supervisor:
    def __init__(self, metrics: Metrics, on_fatal: Callable[[str], None],
                 max_crashes: int = 5, window: float = 300.0,
                 backoff: Callable[[], Backoff] = lambda: Backoff(1.0, 30.0),
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.metrics = metrics
        self.on_fatal = on_fatal
        self.max_crashes, self.window = max_crashes, window
        self._backoff = backoff
        self._clock = clock
        self._tasks: dict[str, _Supervised] = {}

    def spawn(self, name: str, factory: Callable[[], Awaitable[None]]) -> None:
        # Running from the moment it is spawned: readiness must not flicker at start.
        entry = _Supervised(name, factory, running=True)
        entry.task = asyncio.create_task(self._guard(entry), name=name)
        self._tasks[name] = entry

    async def _guard(self, entry: _Supervised) -> None:
        backoff = self._backoff()
        while True:
            entry.running = True
            try:
                await entry.factory()
                entry.last_error = "returned, but root tasks run until cancelled"
                log.error("task %s returned unexpectedly; restarting it", entry.name)
            except asyncio.CancelledError:
                entry.running = False
                raise
            except Exception as exc:
                entry.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("task %s crashed", entry.name)
            entry.running = False
            entry.total_crashes += 1
            self.metrics.task_crashes.labels(entry.name).inc()
            now = self._clock()
            entry.crashes.append(now)
            while entry.crashes and entry.crashes[0] <= now - self.window:
                entry.crashes.popleft()
            if len(entry.crashes) > self.max_crashes:
                log.critical("task %s crashed %d times within %gs; stopping the daemon",
                             entry.name, len(entry.crashes), self.window)
                self.on_fatal(entry.name)
                return
            delay = backoff.next_delay()
            log.warning("restarting task %s in %.1fs", entry.name, delay)
            await asyncio.sleep(delay)

    def status(self) -> dict[str, dict[str, Any]]:
        return {name: {"running": e.running, "crashes": e.total_crashes,
                       "last_error": e.last_error} for name, e in self._tasks.items()}

    async def stop(self) -> None:
        tasks = [e.task for e in self._tasks.values() if e.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
