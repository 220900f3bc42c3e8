"""Load -> validate -> compile rule files into an immutable set the engine swaps atomically."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from pydantic import BaseModel, ValidationError

from daemon.core.conditions import (
    Condition,
    ConditionError,
    attribute_keys,
    required_actions,
    required_kinds,
)
from daemon.core.errors import RuleError
from daemon.core.rules import (
    SECURITY_KINDS,
    SOURCE_KINDS,
    ActionSpec,
    LoadedRule,
    Rule,
    discover,
    load_file,
)
from daemon.core.validation import describe_all


class ActionTraits(Protocol):
    """What loading needs of an action besides its parameters (actions.params.ActionInfo)."""

    @property
    def params(self) -> type[BaseModel]: ...

    @property
    def applies_to(self) -> tuple[str, ...]: ...


# Action name -> its parameter model, or its traits; injected so the engine never
# imports actions. A bare model means the action applies to any target.
ActionCatalog = Mapping[str, type[BaseModel] | ActionTraits]
ParamModels = Mapping[str, type[BaseModel]]

_Key = tuple[str, str | None, str | None]


@dataclass(frozen=True, slots=True)
class CompiledRule:
    rule: Rule
    condition: Condition
    file: str
    line: int
    uses_object: bool
    # The event attributes the condition names; None: it may read any of them.
    attributes: frozenset[str] | None = None
    # `clear_when`, compiled; None: the state clears when `when` stops holding.
    clear: Condition | None = None
    # Whether a condition reads `params` (then it gets a context of its own).
    uses_params: bool = False


@dataclass
class RuleSet:
    rules: tuple[CompiledRule, ...] = ()
    files: tuple[str, ...] = ()
    _index: dict[_Key, list[CompiledRule]] = field(default_factory=dict)
    _cache: dict[tuple[str, str, str], tuple[CompiledRule, ...]] = field(default_factory=dict)
    _attributes: dict[tuple[str, str, str], frozenset[str] | None] = field(
        default_factory=dict)

    def __post_init__(self) -> None:
        for compiled in self.rules:
            kind = compiled.rule.match.kind
            actions: Iterable[str | None]
            if compiled.rule.match.action:
                actions = compiled.rule.match.action
            else:
                actions = required_actions(compiled.rule.when) or (None,)
            for action in actions:
                self._index.setdefault((compiled.rule.source, kind, action), []).append(compiled)

    def candidates(self, source: str, kind: str, action: str) -> tuple[CompiledRule, ...]:
        """Rules that can match an event of this source/kind/action, in file order."""
        key = (source, kind, action)
        found = self._cache.get(key)
        if found is None:
            merged: list[CompiledRule] = []
            for k in ((source, kind, action), (source, None, action), (source, kind, None),
                      (source, None, None)):
                merged.extend(self._index.get(k, ()))
            order = {id(r): i for i, r in enumerate(self.rules)}
            found = tuple(sorted(merged, key=lambda r: order[id(r)]))
            if len(self._cache) < 4096:
                self._cache[key] = found
        return found

    def attributes_for(self, source: str, kind: str, action: str) -> frozenset[str] | None:
        """The event attributes the candidates can read (None: any), for the CEL context."""
        key = (source, kind, action)
        if key in self._attributes:
            return self._attributes[key]
        parts = [c.attributes for c in self.candidates(source, kind, action)]
        found = None if None in parts else frozenset().union(*(p for p in parts if p))
        if len(self._attributes) < 4096:
            self._attributes[key] = found
        return found

    def by_name(self, name: str) -> CompiledRule | None:
        return next((r for r in self.rules if r.rule.name == name), None)


def check_actions(specs: Iterable[ActionSpec], catalog: ParamModels, where: str) -> None:
    for spec in specs:
        model = catalog.get(spec.name)
        if model is None:
            known = ", ".join(sorted(catalog))
            raise ValueError(f"{where}: unknown action {spec.name!r} (known: {known})")
        try:
            model.model_validate(spec.params)
        except ValidationError as exc:
            details = "; ".join(describe_all(exc, empty_key="params"))
            raise ValueError(f"{where}: {spec.name}: {details}") from None


def compile_rule(loaded: LoadedRule,
                 catalog: ActionCatalog) -> tuple[CompiledRule | None, list[RuleError]]:
    """The rule compiled, or None and every problem found in it."""
    rule = loaded.rule
    where = f"{loaded.file}:{loaded.line}"
    problems: list[str] = []
    condition = _compile_condition("when", rule.when, problems)
    clear = (_compile_condition("clear_when", rule.clear_when, problems)
             if rule.clear_when is not None else None)
    for label, spec in steps_of(rule):
        if spec.verify is not None and spec.verify.until is not None:
            _compile_condition(f"{label}: {spec.name}: verify.until", spec.verify.until,
                               problems)
    uses_params = any("params" in c.variables for c in (condition, clear) if c is not None)
    for label, text in (("when", rule.when), ("clear_when", rule.clear_when or "")):
        undeclared = sorted({m.group(1) or m.group(2) for m in _PARAM_REF.finditer(text)}
                            - set(rule.params))
        if undeclared:
            # Rules share a CEL context when their params agree, so an undeclared name
            # would read another rule's value instead of failing.
            problems.append(f"{label}: params {', '.join(undeclared)} not declared in "
                            "`params`")
    models = {name: _params_of(entry) for name, entry in catalog.items()}
    for label, spec in steps_of(rule):
        try:
            check_actions([spec], models, label)
        except ValueError as exc:
            problems.append(str(exc))
            continue
        if misfit := _misfit(rule, spec, catalog[spec.name], label):
            problems.append(misfit)
    if problems or condition is None:
        return None, [RuleError(where, problem, rule.name) for problem in problems]
    return CompiledRule(rule=rule, condition=condition, file=loaded.file, line=loaded.line,
                        uses_object="object" in condition.variables or (
                            clear is not None and "object" in clear.variables),
                        attributes=_attributes(rule), clear=clear,
                        uses_params=uses_params), []


# `params.name` or `params["name"]` in a condition.
_PARAM_REF = re.compile(r"""\bparams\s*(?:\.\s*([A-Za-z_][A-Za-z0-9_]*)"""
                        r"""|\[\s*["']([^"']+)["']\s*\])""")

# What a condition may name: the event, the subject's current state, the rule's params.
CONDITION_VARIABLES = frozenset({"event", "object", "params"})


def _compile_condition(label: str, source: str, problems: list[str]) -> Condition | None:
    try:
        condition = Condition(source)
    except ConditionError as exc:
        problems.append(f"{label}: {exc}")
        return None
    unknown = condition.variables - CONDITION_VARIABLES
    if unknown:
        problems.append(f"{label}: unknown variable(s) {', '.join(sorted(unknown))}; "
                        "conditions see `event`, `object` and `params`")
        return None
    return condition


def _attributes(rule: Rule) -> frozenset[str] | None:
    """The attributes `when` and `clear_when` name together (None: any)."""
    keys = [attribute_keys(source) for source in (rule.when, rule.clear_when) if source]
    return None if None in keys else frozenset().union(*(k for k in keys if k))


def _params_of(entry: type[BaseModel] | ActionTraits) -> type[BaseModel]:
    return entry if isinstance(entry, type) else entry.params


def targets_of(rule: Rule) -> tuple[str, ...]:
    """The target kinds (`docker/container`) a rule's events can be about; `src/*`: any."""
    if rule.target is not None:
        return (rule.target.kind,)
    if rule.source == "security":  # a posture event is about a container or an object
        checked = ((rule.match.kind,) if rule.match.kind else
                   tuple(sorted(required_kinds(rule.when) or ())) or SECURITY_KINDS)
        return tuple("docker/container" if kind == "container" else f"kubernetes/{kind}"
                     for kind in checked)
    kinds = ((rule.match.kind,) if rule.match.kind else
             tuple(sorted(required_kinds(rule.when) or ())) or SOURCE_KINDS.get(rule.source))
    return tuple(f"{rule.source}/{kind}" for kind in kinds) if kinds else (f"{rule.source}/*",)


def steps_of(rule: Rule) -> list[tuple[str, ActionSpec]]:
    """Every action a rule can run, with the key it sits under."""
    steps = [("actions", spec) for spec in rule.actions]
    steps.extend(("escalate", spec) for spec in rule.escalate)
    if rule.budget is not None:
        steps.extend(("budget.then", spec) for spec in rule.budget.then)
    if rule.flap is not None:
        steps.extend(("flap.notify", spec) for spec in rule.flap.notify)
    return steps


def _misfit(rule: Rule, spec: ActionSpec, entry: type[BaseModel] | ActionTraits,
            label: str) -> str | None:
    applies_to = () if isinstance(entry, type) else entry.applies_to
    targets = targets_of(rule)
    if not applies_to or all(target in applies_to for target in targets):
        return None
    return (f"{label}: {spec.name} acts on {', '.join(applies_to)} only, but this rule's "
            f"events are about {', '.join(targets)}")


def compile_rules(
    paths: Iterable[str | Path], catalog: ActionCatalog
) -> tuple[RuleSet, list[RuleError]]:
    """Every rule under `paths` that is valid, and every problem found in the others."""
    errors: list[RuleError] = []
    compiled: list[CompiledRule] = []
    names: dict[str, str] = {}
    check_ids: dict[str, str] = {}
    files: list[Path] = []
    for entry in paths:
        found = discover([entry])
        if not found and Path(entry).is_dir():
            # An emptied directory (a failed mount, deleted files) is not "no rules".
            errors.append(RuleError(str(entry), "no rule files (*.yaml, *.yml)"))
        files.extend(found)
    for path in files:
        if not path.exists():
            errors.append(RuleError(str(path), "no such file or directory"))
            continue
        loaded, problems = load_file(path)
        errors.extend(problems)
        for item in loaded:
            rule, problems = compile_rule(item, catalog)
            errors.extend(problems)
            if rule is None:
                continue
            if rule.rule.name in names:
                errors.append(RuleError(f"{item.file}:{item.line}",
                                        f"rule name already used in {names[rule.rule.name]}",
                                        rule.rule.name))
                continue
            check = rule.rule.security
            if check is not None and check.id in check_ids:
                errors.append(RuleError(f"{item.file}:{item.line}",
                                        f"security.id {check.id} already used in "
                                        f"{check_ids[check.id]}", rule.rule.name))
                continue
            if check is not None:
                check_ids[check.id] = f"{item.file}:{item.line}"
            names[rule.rule.name] = f"{item.file}:{item.line}"
            compiled.append(rule)
    return RuleSet(rules=tuple(compiled), files=tuple(str(f) for f in files)), errors


def load_ruleset(
    paths: Iterable[str | Path], catalog: ActionCatalog
) -> tuple[RuleSet, list[RuleError]]:
    """Every rule under `paths`, or the list of every problem found (then the set is empty).

    All or nothing, as Prometheus does on reload: a half-applied rule change is
    harder to reason about than the previous good set.
    """
    ruleset, errors = compile_rules(paths, catalog)
    return (RuleSet(), errors) if errors else (ruleset, [])
