"""One test group on a fake clock: its series and events in, what happened out."""

from __future__ import annotations

import math
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from daemon.actions.executor import ExecutorSettings
from daemon.core.events import Event, JSONValue, Ref
from daemon.engine.kpi import missing_event, sample_event, series_id
from daemon.engine.ruleset import RuleSet
from daemon.sources.kpi import FORGET_AFTER
from daemon.testing.notation import Gap, Sample
from daemon.testing.shapes import DEFAULT_KINDS, default_resolves
from daemon.testing.sim import Happened, Simulation
from daemon.testing.spec import InputEvent, TestGroup

# Sample times are multiples of the interval; a float step must not skip one.
_EPSILON = 1e-9


@dataclass(frozen=True)
class Timed:
    at: float
    order: int
    event: Event


def run_group(group: TestGroup, ruleset: RuleSet, settings: ExecutorSettings,
              evaluation_interval: float, notify_url: str | None = None) -> list[Happened]:
    """Everything decided and changed in the group, in order."""
    with tempfile.TemporaryDirectory(prefix="remedyd-test-") as scratch:
        sim = Simulation(ruleset, settings, Path(scratch) / "audit.jsonl",
                         notify_url=notify_url)
        try:
            sim.loop.run_until_complete(_run(sim, group, ruleset, evaluation_interval))
        finally:
            sim.close()
        return sim.happened


async def _run(sim: Simulation, group: TestGroup, ruleset: RuleSet,
               evaluation_interval: float) -> None:
    interval = group.interval or evaluation_interval
    end = _end(group, interval)
    timeline = sorted([*_events(group), *_kpi(group, ruleset, interval, evaluation_interval,
                                                end)], key=lambda t: (t.at, t.order))
    index = 0
    while index < len(timeline):
        at = timeline[index].at
        batch = []
        while index < len(timeline) and timeline[index].at == at:
            batch.append(timeline[index].event)
            index += 1
        await sim.advance(at)
        await sim.feed(batch)
    await sim.advance(end)
    await sim.drain()


def _end(group: TestGroup, interval: float) -> float:
    times = [0.0, group.until or 0.0]
    times += [e.at + (e.repeat - 1) * (e.every or 0.0) for e in group.input_events]
    times += [x.at for x in group.expect]
    times += [(len(s.samples) - 1) * interval for s in group.input_series]
    return max(times)


def _events(group: TestGroup) -> Iterator[Timed]:
    for index, spec in enumerate(group.input_events):
        for n in range(spec.repeat):
            at = spec.at + n * (spec.every or 0.0)
            yield Timed(at, index, _event(spec, index, n, at))


def _event(spec: InputEvent, index: int, n: int, at: float) -> Event:
    kind = spec.kind or DEFAULT_KINDS.get(spec.source, spec.source)
    subject = Ref(source=spec.source, kind=spec.subject.kind or kind, name=spec.subject.name,
                  id=spec.subject.id, namespace=spec.subject.namespace)
    resolves = (tuple(spec.resolves) if spec.resolves is not None
                else default_resolves(spec.source, kind, spec.action))
    attributes: dict[str, JSONValue] = dict(spec.attributes)
    return Event(source=spec.source, kind=kind, action=spec.action, subject=subject,
                 id=f"test:{index}:{n}:{at:g}", occurred_at=at, observed_at=at,
                 attributes=attributes, object=spec.object, synthetic=spec.synthetic,
                 resolves=resolves)


def _kpi(group: TestGroup, ruleset: RuleSet, interval: float, evaluation_interval: float,
         end: float) -> Iterator[Timed]:
    """Each KPI rule's query answered at each of its evaluations by its input series,
    turned into events as the KPI source turns an answer into them."""
    by_rule: dict[str, list[int]] = {}
    for index, series in enumerate(group.input_series):
        by_rule.setdefault(series.rule, []).append(index)
    for order, (rule_name, indices) in enumerate(by_rule.items(), start=len(group.input_events)):
        compiled = ruleset.by_name(rule_name)
        if compiled is None:
            continue  # reported when the file was checked
        period = compiled.rule.interval or evaluation_interval
        seen: dict[str, tuple[dict[str, str], int]] = {}  # id -> labels, polls missed
        for tick in range(int(end / period + _EPSILON) + 1):
            at = tick * period
            answer = [(group.input_series[i].labels, value) for i in indices
                      if not isinstance(value := _value_at(group.input_series[i].samples,
                                                           at, interval), Gap)]
            yield from (Timed(at, order, event)
                        for event in _answer(rule_name, answer, seen, at))


def _value_at(samples: list[Sample], at: float, interval: float) -> Sample:
    """The series' sample for an evaluation at `at`: the one of its interval; after
    the last one, none (the query no longer returns it)."""
    position = int(at / interval + _EPSILON)
    return samples[position] if position < len(samples) else Gap.MISSING


def _answer(rule: str, answer: list[tuple[dict[str, str], float]],
            seen: dict[str, tuple[dict[str, str], int]], at: float) -> list[Event]:
    """As the KPI source does: a sample per answered series (NaN: missing, "nan"), a
    missing ("empty") per series answered before and not now until it is forgotten, and
    one missing with no labels for an empty answer when none was ever seen."""
    events: list[Event] = []
    answered = set()
    for labels, value in answer:
        ident = series_id(labels)
        answered.add(ident)
        seen[ident] = (labels, 0)
        events.append(missing_event(rule, labels, "nan", at, at) if math.isnan(value)
                      else sample_event(rule, labels, value, at, at))
    for ident, (labels, missed) in list(seen.items()):
        if ident in answered:
            continue
        if missed + 1 > FORGET_AFTER:
            del seen[ident]
            continue
        seen[ident] = (labels, missed + 1)
        events.append(missing_event(rule, labels, "empty", at, at))
    if not answer and not seen:
        events.append(missing_event(rule, {}, "empty", at, at))
    return events
