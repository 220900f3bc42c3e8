"""Findings: the security checks' verdicts on a set of objects, computed with the same
Evaluator the daemon runs, so `remedyd scan`, the check fixtures and the live daemon
can never disagree on what a rule means."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from daemon.core.events import Event, JSONValue, Ref
from daemon.core.rules import SEVERITIES, Severity
from daemon.engine.evaluator import Evaluator
from daemon.engine.ruleset import RuleSet


@dataclass(frozen=True, slots=True)
class Finding:
    check: str  # the rule's security.id
    rule: str  # the rule's name
    severity: Severity
    control: str
    remediation: str
    description: str
    subject: Ref
    platform: str
    # Where the object came from: a manifest file and the line its document starts on.
    file: str = ""
    line: int = 0
    drift: list[JSONValue] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"check": self.check, "rule": self.rule, "severity": self.severity,
                "control": self.control, "remediation": self.remediation,
                "description": self.description, "platform": self.platform,
                "subject": self.subject.as_dict(),
                **({"file": self.file, "line": self.line} if self.file else {}),
                **({"drift": self.drift} if self.drift else {})}


def at_least(severity: Severity, floor: Severity) -> bool:
    return SEVERITIES.index(severity) >= SEVERITIES.index(floor)


def evaluate(ruleset: RuleSet, events: Iterable[Event],
             locations: dict[str, tuple[str, int]] | None = None) -> list[Finding]:
    """Every (check, object) the security rules of `ruleset` find in `events` (posture
    events, one per object), in event order then rule order. `locations` maps a subject
    key to its manifest (file, line)."""
    evaluator = Evaluator(ruleset)
    found: list[Finding] = []
    for event in events:
        for decision in evaluator.evaluate(event, event.observed_at):
            rule = decision.rule
            check = rule.security
            if check is None:
                continue
            file, line = (locations or {}).get(event.subject.key, ("", 0))
            drift = event.attributes.get("drift")
            found.append(Finding(
                check=check.id, rule=rule.name, severity=check.severity,
                control=check.control, remediation=check.remediation,
                description=rule.description, subject=event.subject,
                platform=str(event.attributes.get("platform", "")), file=file, line=line,
                drift=list(drift) if isinstance(drift, list) and "drift" in rule.when
                else []))
    return found
