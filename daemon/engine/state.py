"""Time-based memory of the engine: `for` timers and occurrence counts per (rule, subject).

Pure: every method takes `now` (seconds on a monotonic clock) so that tests
drive it on fake time and nothing here sleeps or reads a clock.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from dataclasses import dataclass

from daemon.core.events import Event


@dataclass
class Pending:
    since: float
    due: float
    event: Event


class MatchState:
    """Per (rule, subject): when the condition started holding, and how often it held."""

    def __init__(self) -> None:
        self.pending: dict[tuple[str, str], Pending] = {}
        self._hits: dict[tuple[str, str], deque[float]] = {}
        # (due, n, key) for every hold; entries whose key was released or held again
        # since are stale and dropped when they reach the top.
        self._dues: list[tuple[float, int, tuple[str, str]]] = []
        self._n = itertools.count()

    def hold(self, key: tuple[str, str], event: Event, now: float, duration: float) -> None:
        current = self.pending.get(key)
        if current is None:
            pending = Pending(since=now, due=now + duration, event=event)
            self.pending[key] = pending
            heapq.heappush(self._dues, (pending.due, next(self._n), key))
            if len(self._dues) > 2 * len(self.pending) + 64:
                self._dues = [(p.due, next(self._n), k) for k, p in self.pending.items()]
                heapq.heapify(self._dues)
        else:
            current.event = event

    def release(self, key: tuple[str, str]) -> None:
        self.pending.pop(key, None)

    def _drop_stale(self) -> None:
        dues = self._dues
        while dues:
            due, _, key = dues[0]
            pending = self.pending.get(key)
            if pending is not None and pending.due == due:
                return
            heapq.heappop(dues)

    def take_due(self, now: float) -> list[tuple[tuple[str, str], Pending]]:
        due: list[tuple[tuple[str, str], Pending]] = []
        self._drop_stale()
        while self._dues and self._dues[0][0] <= now:
            _, _, key = heapq.heappop(self._dues)
            due.append((key, self.pending.pop(key)))
            self._drop_stale()
        return due

    def next_due(self) -> float | None:
        self._drop_stale()
        return self._dues[0][0] if self._dues else None

    def count_hit(self, key: tuple[str, str], now: float, count: int, within: float) -> bool:
        """Record a match; True once `count` matches fell within `within` (then start over)."""
        hits = self._hits.setdefault(key, deque())
        hits.append(now)
        while hits and hits[0] <= now - within:
            hits.popleft()
        if len(hits) >= count:
            hits.clear()
            return True
        return False

    def forget_subject(self, subject_key: str) -> None:
        for key in [k for k in self.pending if k[1] == subject_key]:
            del self.pending[key]
        for key in [k for k in self._hits if k[1] == subject_key]:
            del self._hits[key]
