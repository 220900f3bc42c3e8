"""The one shape every source turns its input into."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeAlias

# What an event attribute may hold: JSON values, so a KPI's float or a restart count
# reaches CEL as a number, not as text to parse.
JSONValue: TypeAlias = str | int | float | bool | list["JSONValue"] | dict[str, "JSONValue"] | None


@dataclass(frozen=True, slots=True)
class Ref:
    """A stable reference to what an event is about: the unit of ordering, cooldowns, budgets."""

    source: str
    kind: str
    name: str
    id: str = ""
    namespace: str = ""

    @property
    def key(self) -> str:
        ident = self.id or self.name
        return f"{self.source}/{self.kind}/{self.namespace}/{ident}" if self.namespace else (
            f"{self.source}/{self.kind}/{ident}"
        )

    def as_dict(self) -> dict[str, str]:
        return {
            "source": self.source,
            "kind": self.kind,
            "name": self.name,
            "id": self.id,
            "namespace": self.namespace,
        }


@dataclass(frozen=True, slots=True)
class Event:
    source: str
    kind: str
    action: str
    subject: Ref
    # Unique per real-world occurrence so a replayed or re-delivered event is recognised.
    id: str
    occurred_at: float
    observed_at: float
    attributes: Mapping[str, JSONValue] = field(default_factory=dict)
    # The subject's current state where the source knows it (a container's inspect output).
    object: Mapping[str, Any] | None = None
    # True for events a source made up from a state listing rather than a change it saw.
    synthetic: bool = False
    # Actions of earlier events about this subject that this one ends ("*": all of them,
    # the subject is gone): a Pod ready again ends its `unready`, so a rule waiting
    # `for: 5m` on that stops waiting.
    resolves: tuple[str, ...] = ()
    # The one rule this event is for (a KPI sample answers one rule's query); "": any.
    for_rule: str = ""

    def summary(self) -> dict[str, Any]:
        """What the audit log keeps of an event: enough to explain, without the whole object."""
        return {
            "id": self.id,
            "source": self.source,
            "kind": self.kind,
            "action": self.action,
            "subject": self.subject.as_dict(),
            "attributes": dict(self.attributes),
            "occurred_at": self.occurred_at,
            "synthetic": self.synthetic,
        }
