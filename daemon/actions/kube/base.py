"""What every Kubernetes action shares: its target resolved from the shared cache, a fresh
read of that target from the API server (observe, shared by superseded and preflight),
and API errors sorted into worth-retrying and not."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import BaseModel

from daemon.actions.base import Action, Refusal
from daemon.actions.params import ACTIONS
from daemon.clients.kubernetes import (
    RESOURCES,
    KubeClient,
    KubeError,
    KubeStatusError,
    KubeUnavailable,
    Resource,
)
from daemon.core.decisions import Decision
from daemon.core.errors import ActionError, PermanentError, TemporaryError
from daemon.core.events import Event, Ref
from daemon.kube.cache import Cache
from daemon.kube.owners import SOURCE, ref_of, resolve_target

# Target kind (as in Refs) -> the resource it is read and written through.
TARGET_RESOURCES: dict[str, Resource] = {
    "pod": RESOURCES["pods"], "deployment": RESOURCES["deployments"],
    "replicaset": RESOURCES["replicasets"], "node": RESOURCES["nodes"],
}
# Target kind -> the cached kinds resolving it needs (the owner chain up to it).
CHAIN_KINDS: dict[str, tuple[str, ...]] = {
    "pod": ("Pod",), "replicaset": ("Pod", "ReplicaSet"),
    "deployment": ("Pod", "ReplicaSet", "Deployment"), "node": ("Pod", "Node"),
}


class KubeAction(Action):
    """A subclass names itself (`name`); what it applies to, acts on and needs comes from
    its ActionInfo in ACTIONS, so rule loading and the implementation cannot disagree."""

    # The target kind ("pod", "deployment", "node"); "" acts on the event's subject.
    target_kind: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        info = ACTIONS.get(getattr(cls, "name", ""))
        if info is None:
            return
        cls.Params = info.params
        cls.applies_to = info.applies_to
        cls.mutating = info.mutating
        cls.permissions = tuple(str(p) for p in info.permissions)
        cls.target_kind = info.acts_on.partition("/")[2]
        cls.observe_key = f"kubernetes/{cls.target_kind or 'subject'}"

    def __init__(self, client: KubeClient, cache: Cache) -> None:
        self.client, self.cache = client, cache

    def cache_kinds(self, event: Event) -> tuple[str, ...]:
        """The cached kinds that must have listed before this action can resolve a target."""
        return CHAIN_KINDS.get(self.target_kind or event.subject.kind, ())

    # -- target ---------------------------------------------------------------------------

    def resolve_target(self, event: Event) -> Ref | str:
        subject = event.subject
        if subject.source != SOURCE:
            return f"needs a Kubernetes event, got one from {subject.source}"
        if not self.target_kind or self.target_kind == subject.kind:
            return subject
        if self.target_kind == "node":
            return self._node_of(subject)
        found = resolve_target(self.cache, subject, self.target_kind)
        if found is None:
            return (f"no {self.target_kind} found for {subject.kind} "
                    f"{subject.namespace}/{subject.name} by its owner chain in the cache "
                    "(gone, not controlled by one, or not watched)")
        return found

    def _node_of(self, subject: Ref) -> Ref | str:
        pod = self.cache.get("Pod", subject.namespace, subject.name)
        node_name = ((pod or {}).get("spec") or {}).get("nodeName")
        if not node_name:
            return f"pod {subject.namespace}/{subject.name} is not cached or not on a node"
        node = self.cache.get("Node", "", str(node_name))
        return ref_of(node) if node is not None else Ref(SOURCE, "node", str(node_name))

    # -- observe and preflight ------------------------------------------------------------

    def resource_of(self, target: Ref) -> Resource:
        return TARGET_RESOURCES[target.kind]

    async def observe(self, target: Ref) -> Mapping[str, Any] | None:
        """The target as the API server has it now; None when gone (or replaced by another
        object of the same name, which is not what the rule saw)."""
        if target.source != SOURCE or target.kind not in TARGET_RESOURCES:
            return None
        try:
            obj = await self.client.get(self.resource_of(target), target.namespace or None,
                                        target.name)
        except KubeError as exc:
            raise api_error(exc, f"read {target.kind} {where(target)}") from None
        if obj is None or (target.id and (obj.get("metadata") or {}).get("uid") != target.id):
            return None
        return obj

    async def preflight(self, decision: Decision, params: BaseModel,
                        state: Mapping[str, Any] | None) -> Refusal | None:
        target = decision.target
        if target.source != SOURCE or target.kind not in TARGET_RESOURCES:
            return Refusal("target", f"{self.name} cannot act on {target.key}")
        if state is None:
            return Refusal("target", f"{target.kind} {where(target)} no longer exists")
        if (state.get("metadata") or {}).get("deletionTimestamp"):
            return Refusal("target", f"{target.kind} {where(target)} is being deleted")
        return self.check_state(decision, params, state)

    def check_state(self, decision: Decision, params: BaseModel,
                    state: Mapping[str, Any]) -> Refusal | None:
        """Whether the target is still in a state this action makes sense on."""
        return None

    def describe_state(self, state: Mapping[str, Any] | None) -> dict[str, Any]:
        if state is None:
            return {"exists": False}
        metadata = state.get("metadata") or {}
        return {"exists": True, "resourceVersion": metadata.get("resourceVersion"),
                "generation": metadata.get("generation")}


def api_error(exc: KubeError, doing: str) -> ActionError:
    """An API failure as the executor's kind of error: retry what may pass, not the rest."""
    if isinstance(exc, KubeUnavailable):
        return TemporaryError(f"{doing}: {exc}", 1.0)
    if isinstance(exc, KubeStatusError):
        if exc.code in (409, 429) or exc.code >= 500:
            return TemporaryError(f"{doing}: {exc.describe()}", exc.retry_after or 1.0)
        return PermanentError(f"{doing}: {exc.describe()}")
    return TemporaryError(f"{doing}: {exc}", 1.0)


def where(target: Ref) -> str:
    """namespace/name (a Node: its name), as messages and audit details name an object."""
    return f"{target.namespace}/{target.name}" if target.namespace else target.name
