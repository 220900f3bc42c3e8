"""PURE: (event, rule set, state, now) -> decisions and state changes. No I/O, no clock,
no logging."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from daemon.core.conditions import Condition, ConditionError, make_context
from daemon.core.decisions import Decision
from daemon.core.events import Event
from daemon.engine.alerts import Machine
from daemon.engine.changes import StateChange
from daemon.engine.ruleset import CompiledRule, RuleSet
from daemon.engine.state import MatchState

# A KPI series with no sample this time (an empty result, NaN): the rule's on_missing.
MISSING = "missing"


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


def _waived(event: Event, check_id: str) -> bool:
    """An operator accepted this finding on this object as it is now (the posture source
    lists it in `waived` while the object's security fields stay the accepted ones)."""
    waived = event.attributes.get("waived")
    return isinstance(waived, list) and check_id in waived


class Evaluator:
    def __init__(self, ruleset: RuleSet, new_id: Callable[[], str] = _incident_id) -> None:
        self.ruleset = ruleset
        self.state = MatchState()
        self.problems: list[EvaluationProblem] = []
        self.machine = Machine(self.state, new_id)
        self._by_name = {c.rule.name: c for c in ruleset.rules}
        # Per candidate tuple (RuleSet caches them): which params-using rules share a
        # context; the tuple is kept so an id reused after a swap is not mistaken.
        self._groups: dict[int, tuple[tuple[CompiledRule, ...],
                                      dict[str, tuple[int, dict[str, Any]]]]] = {}

    def rearm(self, rule: str, subject_key: str) -> None:
        """A decision of this rule on this subject was refused for now (an `unless` gate, a
        silence, not the leader): while its state keeps firing, the next sample that holds
        decides again, instead of the episode staying unacted on until it resolves."""
        alert = self.state.alerts.get(subject_key, {}).get(rule)
        if alert is not None and alert.phase == "firing":
            alert.rearmed = True

    def swap(self, ruleset: RuleSet) -> None:
        """Take a new rule set; the state of rules that still exist carries over."""
        self.state.forget_rules({r.rule.name for r in ruleset.rules})
        self.ruleset = ruleset
        self._by_name = {c.rule.name: c for c in ruleset.rules}
        self._groups.clear()

    def evaluate(self, event: Event, now: float) -> list[Decision]:
        decisions: list[Decision] = []
        subject_key = event.subject.key
        ends = event.action == "destroy" or "*" in event.resolves
        if ends:
            self._forget(event, subject_key, now)
        elif event.resolves and subject_key in self.state.alerts:
            self._resolve(event, subject_key, now, decisions)
        if event.for_rule and event.action == MISSING:
            self._missing(event, subject_key, now, decisions)
            return decisions
        candidates = self.ruleset.candidates(event.source, event.kind, event.action)
        if event.for_rule:  # a KPI sample answers its own rule's query only
            candidates = tuple(c for c in candidates if c.rule.name == event.for_rule)
        if not candidates:
            return decisions
        variables: dict[str, Any] = {
            "event": event_variables(event, self.ruleset.attributes_for(
                event.source, event.kind, event.action))}
        if any(rule.uses_object for rule in candidates):
            variables["object"] = dict(event.object or {})
        # Rules whose params agree share one context, and rules without params use the
        # first of those (a `params` they never read is harmless): CEL converts the whole
        # event into each context, and one per rule cost 8x the evaluation of 30
        # security checks.
        groups = self._params_groups(candidates)
        first = next(iter(groups.values()), None)
        contexts: dict[int, Any] = {}
        alerts = self.state.alerts.get(subject_key)
        for compiled in candidates:
            rule = compiled.rule
            if rule.match.kind not in (None, event.kind):
                continue
            group, params = groups[rule.name] if compiled.uses_params else (
                first if first is not None else (-1, None))
            context = contexts.get(group)
            if context is None:
                context = contexts[group] = make_context(
                    variables if params is None else {**variables, "params": params})
            alert = alerts.get(rule.name) if alerts else None
            if self._holds(compiled, compiled.condition, context) and not (
                    rule.security is not None and _waived(event, rule.security.id)):
                if rule.occurrences is not None and not self.state.count_hit(
                        (rule.name, subject_key), now, rule.occurrences.count,
                        rule.occurrences.within):
                    if alert is not None:
                        self.machine.neither(alert)
                    continue
                self.machine.held(compiled, alert, event, now, subject_key, decisions)
            elif alert is not None:
                if (alert.phase == "firing" and compiled.clear is not None
                        and not self._holds(compiled, compiled.clear, context)):
                    self.machine.neither(alert)
                else:
                    self.machine.clears(compiled, alert, event, now, decisions)
        if ends and subject_key in self.state.alerts:
            self._forget(event, subject_key, now)  # a match on its last event: over too
        return decisions

    def _params_groups(self, candidates: tuple[CompiledRule, ...]
                       ) -> dict[str, tuple[int, dict[str, Any]]]:
        """Rule name -> (group, the group's params): rules whose params no key sets to
        two different values are one group, with the union of their params (each rule
        reads only the keys it declares, so it sees its own values)."""
        found = self._groups.get(id(candidates))
        if found is not None and found[0] is candidates:
            return found[1]
        merged: list[dict[str, Any]] = []
        members: list[list[str]] = []
        for compiled in candidates:
            if not compiled.uses_params:
                continue
            params = dict(compiled.rule.params)
            for index, group in enumerate(merged):
                if all(group.get(k, v) == v for k, v in params.items()):
                    group.update(params)
                    members[index].append(compiled.rule.name)
                    break
            else:
                merged.append(params)
                members.append([compiled.rule.name])
        groups = {name: (index, merged[index]) for index, names in enumerate(members)
                  for name in names}
        self._groups[id(candidates)] = (candidates, groups)
        return groups

    def _forget(self, event: Event, subject_key: str, now: float) -> None:
        """The subject is gone: its states end, and nothing is kept of it."""
        for gone in self.state.forget_subject(subject_key):
            self.machine.gone(gone, event, now)

    def _holds(self, compiled: CompiledRule, condition: Condition, context: Any) -> bool:
        try:
            return condition.evaluate(context)
        except ConditionError as exc:
            label = "" if condition is compiled.condition else "clear_when: "
            self.problems.append(EvaluationProblem(compiled.rule.name, f"{label}{exc}"))
            return False

    def _resolve(self, event: Event, subject_key: str, now: float,
                 decisions: list[Decision]) -> None:
        """End the states of this subject that began on one of the actions it resolves."""
        for alert in list(self.state.alerts.get(subject_key, {}).values()):
            compiled = self._by_name.get(alert.rule)
            if (compiled is not None and alert.event is not None
                    and alert.event.action in event.resolves):
                self.machine.resolved(compiled, alert, event, now, decisions)

    def _missing(self, event: Event, subject_key: str, now: float,
                 decisions: list[Decision]) -> None:
        """No sample for a series (or none at all): the rule's on_missing says what that
        counts as; nothing is evaluated, there is no value to evaluate."""
        compiled = self._by_name.get(event.for_rule)
        if compiled is None or compiled.rule.source != event.source:
            return
        alert = self.state.alert(compiled.rule.name, subject_key)
        if compiled.rule.on_missing == "breach":
            self.machine.held(compiled, alert, event, now, subject_key, decisions)
        elif compiled.rule.on_missing == "ok" and alert is not None:
            self.machine.clears(compiled, alert, event, now, decisions)

    def due(self, now: float) -> list[Decision]:
        """What time decided: a `for` elapsed with the condition still holding (and a
        keep_firing_for or a flap window ran out, which decides nothing but changes)."""
        decisions: list[Decision] = []
        for timer, alert in self.state.take_due(now):
            compiled = self._by_name.get(alert.rule)
            if compiled is None:
                self.state.drop(alert)
            else:
                self.machine.timer(compiled, alert, timer, now, decisions)
        return decisions

    def next_due(self) -> float | None:
        return self.state.next_due()

    def take_problems(self) -> list[EvaluationProblem]:
        problems, self.problems = self.problems, []
        return problems

    def take_changes(self) -> list[StateChange]:
        """The state changes since the last call, in order (the daemon audits them)."""
        return self.machine.take_changes()
