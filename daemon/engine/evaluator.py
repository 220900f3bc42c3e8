"""PURE: (event, rule set, state, now) -> decisions. No I/O, no clock, no logging."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from daemon.core.conditions import ConditionError, make_context
from daemon.core.decisions import Decision
from daemon.core.events import Event
from daemon.engine.ruleset import CompiledRule, RuleSet
from daemon.engine.state import MatchState


@dataclass(frozen=True, slots=True)
class EvaluationProblem:
    rule: str
    message: str


def _incident_id() -> str:
    return os.urandom(8).hex()


def event_variables(event: Event, attributes: frozenset[str] | None = None) -> dict[str, Any]:
    """What conditions see as `event`; `attributes` limits the map to those keys.

    CEL converts every value into the context (~1 us a string) and looks a key
    up in time linear in the map's size, so only what the rules name goes in.
    """
    if attributes is None:
        attrs = dict(event.attributes)
    else:
        attrs = {k: v for k in attributes if (v := event.attributes.get(k)) is not None}
    return {
        "source": event.source,
        "kind": event.kind,
        "action": event.action,
        "id": event.id,
        "synthetic": event.synthetic,
        "subject": {"name": event.subject.name, "id": event.subject.id,
                    "namespace": event.subject.namespace, "kind": event.subject.kind},
        "attributes": attrs,
    }


class Evaluator:
    def __init__(self, ruleset: RuleSet, new_id: Callable[[], str] = _incident_id) -> None:
        self.ruleset = ruleset
        self.state = MatchState()
        self.problems: list[EvaluationProblem] = []
        self._new_id = new_id

    def swap(self, ruleset: RuleSet) -> None:
        """Take a new rule set; the state of rules that still exist carries over."""
        self.state.forget_rules({r.rule.name for r in ruleset.rules})
        self.ruleset = ruleset

    def evaluate(self, event: Event, now: float) -> list[Decision]:
        candidates = self.ruleset.candidates(event.source, event.kind, event.action)
        if event.action == "destroy" or "*" in event.resolves:
            self.state.forget_subject(event.subject.key)
        elif event.resolves and self.state.pending:
            self.state.resolve(event.subject.key, event.resolves)
        if not candidates:
            return []
        variables: dict[str, Any] = {
            "event": event_variables(event, self.ruleset.attributes_for(
                event.source, event.kind, event.action))}
        if any(rule.uses_object for rule in candidates):
            variables["object"] = dict(event.object or {})
        context = make_context(variables)
        decisions: list[Decision] = []
        for compiled in candidates:
            if compiled.rule.match.kind not in (None, event.kind):
                continue
            try:
                matched = compiled.condition.evaluate(context)
            except ConditionError as exc:
                self.problems.append(EvaluationProblem(compiled.rule.name, str(exc)))
                matched = False
            decision = self._after_match(compiled, event, matched, now)
            if decision is not None:
                decisions.append(decision)
        return decisions

    def _after_match(self, compiled: CompiledRule, event: Event, matched: bool,
                     now: float) -> Decision | None:
        rule = compiled.rule
        key = (rule.name, event.subject.key)
        if not matched:
            self.state.release(key)
            return None
        if rule.occurrences is not None and not self.state.count_hit(
            key, now, rule.occurrences.count, rule.occurrences.within
        ):
            return None
        if rule.for_ > 0:
            self.state.hold(key, event, now, rule.for_)
            return None
        return self._decide(compiled, event, now)

    def due(self, now: float) -> list[Decision]:
        """Decisions whose `for` has elapsed with the condition still holding."""
        decisions = []
        for (rule_name, _), pending in self.state.take_due(now):
            compiled = self.ruleset.by_name(rule_name)
            if compiled is not None:
                decisions.append(self._decide(compiled, pending.event, now))
        return decisions

    def next_due(self) -> float | None:
        return self.state.next_due()

    def take_problems(self) -> list[EvaluationProblem]:
        problems, self.problems = self.problems, []
        return problems

    def _decide(self, compiled: CompiledRule, event: Event, now: float) -> Decision:
        return Decision(
            incident_id=self._new_id(),
            rule=compiled.rule,
            event=event,
            target=event.subject,
            actions=tuple(compiled.rule.actions),
            decided_at=now,
        )
