"""`[security] params`: the operator's values for the security rules' `params` (registry
allow-lists, the cluster-admin allow-list, policy switches), so the bundled pack is
tuned in the config rather than edited."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from daemon.core.errors import RuleError
from daemon.engine.ruleset import RuleSet
from daemon.settings import SecurityParam


def apply_params(ruleset: RuleSet,
                 overrides: Mapping[str, SecurityParam]) -> tuple[RuleSet, list[RuleError]]:
    """`ruleset` with each security rule's params overridden where it declares the key;
    an override no security rule declares is an error naming it (a typo would silently
    leave the pack's default in force), as is one of another type than the default."""
    if not overrides:
        return ruleset, []
    used: set[str] = set()
    errors: list[RuleError] = []
    compiled = []
    for entry in ruleset.rules:
        rule = entry.rule
        keys = [k for k in overrides if rule.source == "security" and k in rule.params]
        if not keys:
            compiled.append(entry)
            continue
        params = dict(rule.params)
        for key in keys:
            used.add(key)
            value, default = overrides[key], params[key]
            if isinstance(default, list) != isinstance(value, list) or (
                    isinstance(default, bool) != isinstance(value, bool)):
                errors.append(RuleError(f"[security] params.{key}",
                                        f"expected a value like the rule's default "
                                        f"{default!r}, got {value!r}", rule.name))
                continue
            params[key] = value
        compiled.append(replace(entry, rule=rule.model_copy(update={"params": params})))
    for key in sorted(set(overrides) - used):
        errors.append(RuleError(f"[security] params.{key}",
                                "no loaded `source: security` rule has this param"))
    return RuleSet(rules=tuple(compiled), files=ruleset.files), errors
