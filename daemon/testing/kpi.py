"""KPI sample and missing-data events as the KPI source hands them to the engine."""

from __future__ import annotations

from collections.abc import Mapping

from daemon.core.events import Event, JSONValue, Ref
from daemon.testing.series import format_labels

SOURCE = "kpi"


def _subject(rule: str, labels: Mapping[str, str]) -> Ref:
    text = format_labels(labels)
    return Ref(source=SOURCE, kind="series", name=f"{rule}{text}", id=text)


def sample_event(rule: str, labels: Mapping[str, str], value: float, at: float) -> Event:
    subject = _subject(rule, labels)
    attributes: dict[str, JSONValue] = {"value": value, "labels": dict(labels)}
    return Event(source=SOURCE, kind="series", action="sample", subject=subject,
                 id=f"{subject.name}@{at:.3f}", occurred_at=at, observed_at=at,
                 attributes=attributes, for_rule=rule)


def missing_event(rule: str, labels: Mapping[str, str], reason: str, at: float) -> Event:
    subject = _subject(rule, labels)
    attributes: dict[str, JSONValue] = {"labels": dict(labels), "reason": reason}
    return Event(source=SOURCE, kind="series", action="missing", subject=subject,
                 id=f"{subject.name}@{at:.3f}:missing", occurred_at=at, observed_at=at,
                 attributes=attributes, for_rule=rule)
