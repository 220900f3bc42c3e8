"""Time-based memory of the engine, per (rule, subject): the alert state (pending,
firing, its timers, its recent changes) and occurrence counts.

Pure: every method takes `now` (seconds on a monotonic clock) so that tests
drive it on fake time and nothing here sleeps or reads a clock. What the states
mean and how they move is daemon.engine.alerts; this module only keeps them.

Memory stays flat however many subjects come and go: an alert state is dropped
when it resolves (once its flap window has passed, for a rule with `flap`), and an
occurrence series is evicted once its newest hit is older than the rule's window
(most subjects, e.g. a Kubernetes Pod or a KPI series, never send `destroy`).
"""

from __future__ import annotations

import heapq
import itertools
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

from daemon.core.events import Event, Ref
from daemon.engine.changes import AlertState

Key = tuple[str, str]  # (rule name, subject key)
# What a timer ends: a `for` (pending -> firing), a keep_firing_for (firing -> resolved),
# or a flap window (flapping may end; a resolved state may be dropped).
Timer = Literal["for", "keep", "flap"]

# Series evicted per call at most, so a sweep after a long quiet spell never
# stalls the engine loop; each hit adds at most one series, so none pile up.
SWEEP_BATCH = 1024


@dataclass(slots=True)
class Alert:
    """One rule's state for one subject, from its first match to its resolution."""

    rule: str
    subject: Ref
    subject_key: str
    phase: AlertState = "inactive"
    # The episode's incident (kept after it resolved, for a flapping_ended to name).
    incident: str = ""
    # The newest event the condition held on: what a `for` elapsing decides on, and
    # what a later event's `resolves` is matched against.
    event: Event | None = None
    for_due: float | None = None
    keep_due: float | None = None
    flap_due: float | None = None
    # When the state changed, inside the rule's flap window (rules with `flap` only).
    changes: list[float] = field(default_factory=list)
    flapping: bool = False
    # A KPI rule's decision was refused for now (a gate, a silence): the next sample
    # that still holds decides again, within the same episode and incident.
    rearmed: bool = False

    def due(self, timer: Timer) -> float | None:
        return self.for_due if timer == "for" else (
            self.keep_due if timer == "keep" else self.flap_due)

    def set_due(self, timer: Timer, due: float | None) -> None:
        """None cancels it: its entry in the timer heap goes stale."""
        if timer == "for":
            self.for_due = due
        elif timer == "keep":
            self.keep_due = due
        else:
            self.flap_due = due


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
    alerts: int = 0  # (rule, subject) alert states held, inactive ones included


class MatchState:
    """Per (rule, subject): its alert state and timers, and how often the condition held."""

    def __init__(self) -> None:
        # subject -> rule -> state: one lookup per event finds a subject's states, and
        # `destroy` forgets a subject without a scan.
        self.alerts: dict[str, dict[str, Alert]] = {}
        self._count = 0
        # (due, n, timer, subject, rule); entries whose state was dropped or whose timer
        # was cancelled or moved since are stale and dropped when they reach the top.
        self._timers: list[tuple[float, int, Timer, str, str]] = []
        self._n = itertools.count()
        # subject -> rule -> series, as for the alerts.
        self._series: dict[str, dict[str, Series]] = {}
        # Per window length, keys in order of their newest hit (oldest first): the
        # expired ones are at the front. Entries for series since dropped or moved to
        # another window (a reload changed it) are stale and skipped.
        self._by_last_hit: dict[float, OrderedDict[Key, None]] = {}

    # -- alert states ---------------------------------------------------------------------

    def alert(self, rule: str, subject_key: str) -> Alert | None:
        rules = self.alerts.get(subject_key)
        return rules.get(rule) if rules else None

    def add(self, rule: str, subject: Ref, subject_key: str) -> Alert:
        alert = Alert(rule, subject, subject_key)
        self.alerts.setdefault(subject_key, {})[rule] = alert
        self._count += 1
        return alert

    def drop(self, alert: Alert) -> None:
        rules = self.alerts.get(alert.subject_key)
        if rules is None or rules.get(alert.rule) is not alert:
            return
        del rules[alert.rule]
        self._count -= 1
        if not rules:
            del self.alerts[alert.subject_key]

    def schedule(self, alert: Alert, timer: Timer, due: float) -> None:
        alert.set_due(timer, due)
        heapq.heappush(self._timers, (due, next(self._n), timer, alert.subject_key, alert.rule))
        if len(self._timers) > 3 * self._count + 64:
            self._timers = [(d, next(self._n), t, a.subject_key, a.rule)
                            for a in self._each() for t in ("for", "keep", "flap")
                            if (d := a.due(t)) is not None]
            heapq.heapify(self._timers)

    def _each(self) -> Iterator[Alert]:
        for rules in self.alerts.values():
            yield from rules.values()

    def _live(self, entry: tuple[float, int, Timer, str, str]) -> Alert | None:
        due, _, timer, subject, rule = entry
        alert = self.alert(rule, subject)
        return alert if alert is not None and alert.due(timer) == due else None

    def _drop_stale(self) -> None:
        timers = self._timers
        while timers and self._live(timers[0]) is None:
            heapq.heappop(timers)

    def take_due(self, now: float) -> list[tuple[Timer, Alert]]:
        """The timers that ran out by `now`, each cleared as it is taken, oldest first."""
        self.sweep(now)
        due: list[tuple[Timer, Alert]] = []
        self._drop_stale()
        while self._timers and self._timers[0][0] <= now:
            entry = heapq.heappop(self._timers)
            alert = self._live(entry)
            if alert is not None:
                timer = entry[2]
                alert.set_due(timer, None)  # a duplicate entry is stale now
                due.append((timer, alert))
            self._drop_stale()
        return due

    def next_due(self) -> float | None:
        self._drop_stale()
        return self._timers[0][0] if self._timers else None

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

    def forget_subject(self, subject_key: str) -> list[Alert]:
        """Drop everything about a subject that is gone; its alert states, for reporting."""
        self._series.pop(subject_key, None)
        rules = self.alerts.pop(subject_key, None)
        if not rules:
            return []
        self._count -= len(rules)
        return list(rules.values())

    def forget_rules(self, keep: set[str]) -> None:
        """Drop the state of every rule not in `keep` (a reload removed them)."""
        for alert in [a for a in self._each() if a.rule not in keep]:
            self.drop(alert)
        for subject, rules in list(self._series.items()):
            for rule in [r for r in rules if r not in keep]:
                self._drop_series(subject, rule)

    def size(self) -> StateSize:
        series = [s for rules in self._series.values() for s in rules.values()]
        return StateSize(pending=sum(1 for a in self._each() if a.for_due is not None),
                         series=len(series), hits=sum(len(s.times) for s in series),
                         alerts=self._count)
