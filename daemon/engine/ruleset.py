"""Load -> validate -> compile rule files into an immutable set the engine swaps atomically."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ValidationError

from daemon.core.conditions import Condition, ConditionError, attribute_keys, required_actions
from daemon.core.errors import RuleError
from daemon.core.rules import ActionSpec, LoadedRule, Rule, discover, load_file

# Action name -> its parameter model; injected so the engine never imports actions.
ActionCatalog = Mapping[str, type[BaseModel]]

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


def check_actions(specs: Iterable[ActionSpec], catalog: ActionCatalog, where: str) -> None:
    for spec in specs:
        model = catalog.get(spec.name)
        if model is None:
            known = ", ".join(sorted(catalog))
            raise ValueError(f"{where}: unknown action {spec.name!r} (known: {known})")
        try:
            model.model_validate(spec.params)
        except ValidationError as exc:
            details = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'params'}: {e['msg']}" for e in exc.errors()
            )
            raise ValueError(f"{where}: {spec.name}: {details}") from None


def compile_rule(loaded: LoadedRule, catalog: ActionCatalog) -> CompiledRule:
    rule = loaded.rule
    where = f"{loaded.file}:{loaded.line}"
    try:
        condition = Condition(rule.when)
    except ConditionError as exc:
        raise RuleError(where, f"when: {exc}", rule.name) from None
    unknown = condition.variables - {"event", "object"}
    if unknown:
        raise RuleError(
            where, f"when: unknown variable(s) {', '.join(sorted(unknown))}; "
            "conditions see `event` and `object`", rule.name,
        )
    try:
        check_actions(rule.actions, catalog, "actions")
        if rule.budget is not None:
            check_actions(rule.budget.then, catalog, "budget.then")
    except ValueError as exc:
        raise RuleError(where, str(exc), rule.name) from None
    return CompiledRule(rule=rule, condition=condition, file=loaded.file, line=loaded.line,
                        uses_object="object" in condition.variables,
                        attributes=attribute_keys(rule.when))


def load_ruleset(
    paths: Iterable[str | Path], catalog: ActionCatalog
) -> tuple[RuleSet, list[RuleError]]:
    """Every rule under `paths`, or the list of every problem found (then the set is empty).

    All or nothing, as Prometheus does on reload: a half-applied rule change is
    harder to reason about than the previous good set.
    """
    errors: list[RuleError] = []
    compiled: list[CompiledRule] = []
    names: dict[str, str] = {}
    files = discover(paths)
    for path in files:
        if not path.exists():
            errors.append(RuleError(str(path), "no such file or directory"))
            continue
        try:
            loaded = load_file(path)
        except RuleError as exc:
            errors.append(exc)
            continue
        for item in loaded:
            try:
                rule = compile_rule(item, catalog)
            except RuleError as exc:
                errors.append(exc)
                continue
            if rule.rule.name in names:
                errors.append(RuleError(f"{item.file}:{item.line}",
                                        f"rule name already used in {names[rule.rule.name]}",
                                        rule.rule.name))
                continue
            names[rule.rule.name] = f"{item.file}:{item.line}"
            compiled.append(rule)
    if errors:
        return RuleSet(), errors
    return RuleSet(rules=tuple(compiled), files=tuple(str(f) for f in files)), []
