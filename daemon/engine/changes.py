"""What the engine reports besides decisions: a rule's state for one subject changed.

The daemon audits each change (so an incident's record shows when it went pending,
fired, flapped and resolved) and hands it to whoever waits on it (a ladder verifying a
repair stops at `resolved`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from daemon.core.events import Event, Ref

AlertState = Literal["inactive", "pending", "firing"]
# A change of state, or the start or end of flapping (the state itself goes on).
Change = Literal["pending", "firing", "resolved", "flapping", "flapping_ended"]


@dataclass(frozen=True, slots=True)
class StateChange:
    rule: str
    subject: Ref
    change: Change
    # The incident the episode belongs to: its decisions, ladder steps and this change.
    incident: str
    at: float  # the engine's clock (monotonic seconds)
    # The event that caused it; None when time did (a `for` elapsing, keep_firing_for ending).
    event: Event | None = None

    def summary(self) -> dict[str, Any]:
        return {"rule": self.rule, "subject": self.subject.as_dict(), "change": self.change,
                "incident": self.incident,
                **({"event": self.event.summary()} if self.event is not None else {})}
