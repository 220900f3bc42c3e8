"""Drive the pure engine on a fake clock as the daemon's engine loop does: KPI samples and
other events at given times, timers run when they fall due, decisions and state changes
collected in order."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel

from daemon.actions.params import NoParams
from daemon.core.decisions import Decision
from daemon.core.events import Event, JSONValue, Ref
from daemon.engine.changes import StateChange
from daemon.engine.evaluator import Evaluator
from daemon.engine.ruleset import RuleSet, load_ruleset
from tests.rulekit import CATALOG

# Test actions: one that changes its target, one that only tells (a `notify.` name).
FIX, PAGE = "test.fix", "notify.page"
TEST_CATALOG: dict[str, type[BaseModel]] = {**CATALOG, FIX: NoParams, PAGE: NoParams}


def ruleset(tmp_path: Path, body: str) -> RuleSet:
    path = tmp_path / "rules.yaml"
    path.write_text("rules:\n" + body)
    loaded, errors = load_ruleset([path], TEST_CATALOG)
    assert not errors, errors
    return loaded


def _series(labels: Mapping[str, str]) -> str:
    return "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"


def kpi_ref(rule: str, labels: Mapping[str, str]) -> Ref:
    ident = _series(labels)
    return Ref(source="kpi", kind="series", name=f"{rule}{ident}", id=ident)


def sample(rule: str, value: float, at: float, **labels: str) -> Event:
    """A KPI sample of one series, as the KPI source emits it."""
    attributes: dict[str, JSONValue] = {"value": value, "labels": dict(labels)}
    return Event("kpi", "series", "sample", kpi_ref(rule, labels),
                 f"{rule}{_series(labels)}@{at}", at, at, attributes, for_rule=rule)


def missing(rule: str, at: float, reason: str = "empty", **labels: str) -> Event:
    """No sample for a series seen before (an empty result, NaN)."""
    attributes: dict[str, JSONValue] = {"labels": dict(labels), "reason": reason}
    return Event("kpi", "series", "missing", kpi_ref(rule, labels),
                 f"{rule}{_series(labels)}@{at}:missing", at, at, attributes, for_rule=rule)


@dataclass
class Run:
    """An Evaluator and everything it said, driven in time order."""

    engine: Evaluator
    decisions: list[Decision] = field(default_factory=list)
    changes: list[StateChange] = field(default_factory=list)

    def until(self, now: float) -> None:
        """Let time pass to `now`, running every timer that falls due on the way."""
        while (due := self.engine.next_due()) is not None and due <= now:
            self._take(self.engine.due(due))
        self._take(self.engine.due(now))

    def feed(self, event: Event, now: float) -> None:
        self.until(now)
        self._take(self.engine.evaluate(event, now))
        self._take(self.engine.due(now))

    def samples(self, rule: str, values: Iterable[float], start: float = 0.0,
                every: float = 15.0, **labels: str) -> float:
        """One sample per `every` seconds from `start`; the time after the last."""
        now = start
        for value in values:
            self.feed(sample(rule, value, now, **labels), now)
            now += every
        return now

    def _take(self, decisions: list[Decision]) -> None:
        self.decisions.extend(decisions)
        self.changes.extend(self.engine.take_changes())

    def kinds(self) -> list[str]:
        return [c.change for c in self.changes]
