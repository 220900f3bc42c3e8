"""Actions that run nothing: each records what it was asked to do.

They carry the real action's traits (mutating or not, what it acts on), so the guard
chain (budgets count changing actions, notifications their own rate) and the targets
(a Pod's rollback aims at its Deployment) come out as in the daemon.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel

from daemon.actions.base import Action
from daemon.actions.params import ACTIONS, ActionInfo
from daemon.core.decisions import Decision
from daemon.core.events import Event, Ref
from daemon.kube.cache import Cache
from daemon.kube.owners import resolve_target


@dataclass
class Call:
    action: str
    incident: str
    rule: str
    target: Ref
    params: dict[str, Any]
    at: float


@dataclass
class Recording:
    calls: list[Call] = field(default_factory=list)


class RecordingAction(Action):
    name: ClassVar[str] = "recording"

    def __init__(self, info: ActionInfo, recording: Recording,
                 clock: Callable[[], float], cache: Cache | None = None) -> None:
        self.info = info
        self.recording = recording
        self.clock = clock
        # Replaying raw Kubernetes events: the owner chain as the daemon's cache held it.
        self.cache = cache

    def resolve_target(self, event: Event) -> Ref | str:
        acts_on = self.info.acts_on
        subject = event.subject
        if not acts_on:
            return subject
        source, _, kind = acts_on.partition("/")
        if subject.source != source:
            return f"needs a {source} event, got one from {subject.source}"
        if subject.kind == kind:
            return subject
        if self.cache is not None:
            found = resolve_target(self.cache, subject, kind)
            return found if found is not None else (
                f"no {kind} found for {subject.kind} {subject.namespace}/{subject.name} "
                "by its owner chain")
        return _from_attributes(event, kind)

    async def run(self, decision: Decision, params: BaseModel) -> dict[str, Any]:
        self.recording.calls.append(Call(
            action=self.name, incident=decision.incident_id, rule=decision.rule.name,
            target=decision.target, params=params.model_dump(mode="json"),
            at=self.clock()))
        return {"recorded": True}


def _from_attributes(event: Event, kind: str) -> Ref | str:
    """The owner the Kubernetes source named in the event (workload_kind/_name, the node):
    what the daemon's cache would resolve."""
    subject, attributes = event.subject, event.attributes
    if kind == "node":
        node = attributes.get("node") or ((event.object or {}).get("spec") or {}).get("nodeName")
        if isinstance(node, str) and node:
            return Ref(subject.source, "node", node)
        return f"pod {subject.namespace}/{subject.name}: no `node` attribute names its node"
    for kind_key, name_key in (("workload_kind", "workload_name"),
                               ("owner_kind", "owner_name")):
        owner_kind, owner_name = attributes.get(kind_key), attributes.get(name_key)
        if isinstance(owner_kind, str) and owner_kind.lower() == kind and isinstance(
                owner_name, str) and owner_name:
            return Ref(subject.source, kind, owner_name, namespace=subject.namespace)
    return (f"no {kind} for {subject.kind} {subject.namespace}/{subject.name}: give the event "
            "`workload_kind`/`workload_name` attributes, as the Kubernetes source does")


def recorders(recording: Recording, clock: Callable[[], float],
              cache: Cache | None = None) -> dict[str, Action]:
    """One recorder per known action."""
    out: dict[str, Action] = {}
    for name, info in ACTIONS.items():
        cls = type(f"Recorded[{name}]", (RecordingAction,), {
            "name": name, "Params": info.params, "mutating": info.mutating,
            "applies_to": info.applies_to})
        out[name] = cls(info, recording, clock, cache)
    return out
