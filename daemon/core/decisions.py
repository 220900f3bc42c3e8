"""What the engine hands the executor: a rule's verdict on one target."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from daemon.core.events import Event, Ref
from daemon.core.rules import ActionSpec, Rule


@dataclass(frozen=True, slots=True)
class Decision:
    incident_id: str
    rule: Rule
    event: Event
    target: Ref
    actions: tuple[ActionSpec, ...]
    decided_at: float

    def summary(self) -> dict[str, Any]:
        return {
            "incident": self.incident_id,
            "rule": self.rule.name,
            "target": self.target.as_dict(),
            "actions": [{"name": a.name, "params": a.params} for a in self.actions],
            "labels": dict(self.rule.labels),
        }
