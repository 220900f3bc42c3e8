"""What the engine hands the executor: a rule's verdict on one target."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from daemon.core.events import Event, Ref
from daemon.core.redact import redact
from daemon.core.rules import ActionSpec, Rule


@dataclass(frozen=True, slots=True)
class Decision:
    incident_id: str
    rule: Rule
    event: Event
    target: Ref
    actions: tuple[ActionSpec, ...]
    decided_at: float
    # Why the actions have no target (a broken owner chain, actions that disagree), when
    # the executor could not resolve one from the event's subject; the `target` guard
    # refuses such a decision.
    unresolved: str = ""
    # The rung of the rule's ladder: 0 its `actions`, n its `escalate[n-1]`; a later rung
    # belongs to the incident of the first.
    step: int = 0
    # Made while the rule's state for this subject flaps: the `flapping` guard refuses it
    # (audited), so an oscillating signal leaves a record but no repeated repairs.
    flapping: bool = False

    def summary(self) -> dict[str, Any]:
        return {
            "incident": self.incident_id,
            "rule": self.rule.name,
            "target": self.target.as_dict(),
            **({"subject": self.event.subject.as_dict()}
               if self.event.subject.key != self.target.key else {}),
            "actions": [{"name": a.name, "params": redact(a.params)} for a in self.actions],
            "labels": dict(self.rule.labels),
            **({"flapping": True} if self.flapping else {}),
        }
