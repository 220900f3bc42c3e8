"""Time-based memory of the engine: `for` timers and occurrence counts per (rule, subject).

Pure: every method takes `now` (seconds on a monotonic clock) so that tests
drive it on fake time and nothing here sleeps or reads a clock.

Memory stays flat however many subjects come and go: a pending `for` ends when
it fires or the condition stops holding, and an occurrence series is evicted
once its newest hit is older than the rule's window (most subjects, e.g. a
Kubernetes Pod or a KPI series, never send `destroy`).
"""

from __future__ import annotations

import heapq
import itertools
from collections import OrderedDict
from dataclasses import dataclass, field

from daemon.core.events import Event

Key = tuple[str, str]  # (rule name, subject key)

# Series evicted per call at most, so a sweep after a long quiet spell never
# stalls the engine loop; each hit adds at most one series, so none pile up.
SWEEP_BATCH = 1024


@dataclass
class Pending:
    since: float
    due: float
    event: Event


@dataclass(slots=True)
class Series:
    within: float
    # Fewer than the rule's `count` times (it fires and starts over at `count`): a
    # list is a third of a deque's size, and trimming a few items from it is as cheap.
    times: list[float] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class StateSize:
    pending: int  # `for` timers running
    series: int  # (rule, subject) occurrence series held
    hits: int  # timestamps in those series


class MatchState:
    """Per (rule, subject): when the condition started holding, and how often it held."""

    def __init__(self) -> None:
        self.pending: dict[Key, Pending] = {}
        # (due, n, key) for every hold; entries whose key was released or held again
        # since are stale and dropped when they reach the top.
        self._dues: list[tuple[float, int, Key]] = []
        self._n = itertools.count()
        # subject -> rule -> series: `destroy` forgets a subject without a scan.
        self._series: dict[str, dict[str, Series]] = {}
        # Per window length, keys in order of their newest hit (oldest first): the
        # expired ones are at the front. Entries for series since dropped or moved to
        # another window (a reload changed it) are stale and skipped.
        self._by_last_hit: dict[float, OrderedDict[Key, None]] = {}

    # -- `for` ---------------------------------------------------------------------------

    def hold(self, key: Key, event: Event, now: float, duration: float) -> None:
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

    def release(self, key: Key) -> None:
        self.pending.pop(key, None)

    def _drop_stale(self) -> None:
        dues = self._dues
        while dues:
            due, _, key = dues[0]
            pending = self.pending.get(key)
            if pending is not None and pending.due == due:
                return
            heapq.heappop(dues)

    def take_due(self, now: float) -> list[tuple[Key, Pending]]:
        self.sweep(now)
        due: list[tuple[Key, Pending]] = []
        self._drop_stale()
        while self._dues and self._dues[0][0] <= now:
            _, _, key = heapq.heappop(self._dues)
            due.append((key, self.pending.pop(key)))
            self._drop_stale()
        return due

    def next_due(self) -> float | None:
        self._drop_stale()
        return self._dues[0][0] if self._dues else None

    # -- occurrences -----------------------------------------------------------------------

    def count_hit(self, key: Key, now: float, count: int, within: float) -> bool:
        """Record a match; True once `count` matches fell within `within` (then start over)."""
        self.sweep(now)
        rule, subject = key
        rules = self._series.setdefault(subject, {})
        series = rules.get(rule)
        if series is None or series.within != within:
            series = rules[rule] = Series(within)
        order = self._by_last_hit.setdefault(within, OrderedDict())
        order[key] = None
        order.move_to_end(key)
        hits = series.times
        hits.append(now)
        expired = 0
        while expired < len(hits) and hits[expired] <= now - within:
            expired += 1
        del hits[:expired]
        if len(hits) >= count:
            self._drop_series(subject, rule)
            return True
        return False

    def sweep(self, now: float, limit: int = SWEEP_BATCH) -> int:
        """Evict up to `limit` series whose newest hit has left the window; how many."""
        evicted = 0
        for within, order in list(self._by_last_hit.items()):
            while order and evicted < limit:
                key = next(iter(order))
                rule, subject = key
                series = self._series.get(subject, {}).get(rule)
                if series is not None and series.within == within:
                    if series.times[-1] > now - within:
                        break  # the oldest of this window is still inside it
                    self._drop_series(subject, rule)
                    evicted += 1
                del order[key]
            if not order:
                del self._by_last_hit[within]
        return evicted

    def _drop_series(self, subject: str, rule: str) -> None:
        rules = self._series[subject]
        del rules[rule]
        if not rules:
            del self._series[subject]

    # -- subjects and rules that are gone ------------------------------------------------------

    def forget_subject(self, subject_key: str) -> None:
        for key in [k for k in self.pending if k[1] == subject_key]:
            del self.pending[key]
        self._series.pop(subject_key, None)

    def resolve(self, subject_key: str, actions: tuple[str, ...]) -> None:
        """End the `for` holds of this subject that started on one of these actions."""
        for key in [k for k, p in self.pending.items()
                    if k[1] == subject_key and p.event.action in actions]:
            del self.pending[key]

    def forget_rules(self, keep: set[str]) -> None:
        """Drop the state of every rule not in `keep` (a reload removed them)."""
        for key in [k for k in self.pending if k[0] not in keep]:
            del self.pending[key]
        for subject, rules in list(self._series.items()):
            for rule in [r for r in rules if r not in keep]:
                self._drop_series(subject, rule)

    def size(self) -> StateSize:
        series = [s for rules in self._series.values() for s in rules.values()]
        return StateSize(pending=len(self.pending), series=len(series),
                         hits=sum(len(s.times) for s in series))
