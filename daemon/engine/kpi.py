"""PURE: a KPI rule's query answers as events, and a fresh answer judged by the rule.

The KPI source turns every answer into these events; the `recheck` gate builds the
same event from a fresh answer and asks whether the rule still holds for that series,
so both read a series exactly as the engine does.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping
from typing import Any, Literal

from daemon.core.conditions import Condition, make_context
from daemon.core.events import Event, Ref
from daemon.core.rules import Rule
from daemon.engine.evaluator import event_variables

SOURCE = "kpi"
KIND = "series"
MissingReason = Literal["empty", "nan"]


def series_id(labels: Mapping[str, str]) -> str:
    """A label set in Prometheus's text format, labels sorted: `{code="500",job="api"}`."""
    return "{" + ",".join(f'{name}="{_escape(labels[name])}"' for name in sorted(labels)) + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def series_ref(rule: str, labels: Mapping[str, str]) -> Ref:
    ident = series_id(labels)
    return Ref(source=SOURCE, kind=KIND, name=f"{rule}{ident}", id=ident)


def finite(value: float) -> float:
    """+-Inf as the largest float of its sign: it compares as Inf does against any
    threshold, and the audit log (strict JSON) can record it."""
    if math.isinf(value):
        return math.copysign(sys.float_info.max, value)
    return value


def sample_event(rule: str, labels: Mapping[str, str], value: float, at: float,
                 observed_at: float) -> Event:
    """A series' value at evaluation time `at` (not NaN: that is `missing_event`)."""
    subject = series_ref(rule, labels)
    attributes: dict[str, Any] = {"value": finite(value), "labels": dict(labels)}
    if math.isinf(value):
        attributes["infinite"] = True
    return Event(source=SOURCE, kind=KIND, action="sample", subject=subject,
                 id=f"kpi:{rule}:{subject.id}@{at:.3f}", occurred_at=at,
                 observed_at=observed_at, attributes=attributes, for_rule=rule)


def missing_event(rule: str, labels: Mapping[str, str], reason: MissingReason, at: float,
                  observed_at: float) -> Event:
    subject = series_ref(rule, labels)
    return Event(source=SOURCE, kind=KIND, action="missing", subject=subject,
                 id=f"kpi:{rule}:{subject.id}@{at:.3f}:missing", occurred_at=at,
                 observed_at=observed_at,
                 attributes={"labels": dict(labels), "reason": reason}, for_rule=rule)


def still_breaching(rule: Rule, event: Event) -> bool:
    """Whether a fresh KPI event about a firing series keeps it firing: with `clear_when`
    (hysteresis) until that holds, else while `when` holds; a missing series by the
    rule's `on_missing` (`breach` keeps it, `hold` and `ok` do not: nothing shows the
    breach now). Raises ConditionError when the condition cannot be evaluated."""
    if event.action == "missing":
        return rule.on_missing == "breach"
    context = make_context({"event": event_variables(event), "params": dict(rule.params),
                            "object": {}})
    if rule.clear_when is not None:
        return not Condition(rule.clear_when).evaluate(context)
    return Condition(rule.when).evaluate(context)
