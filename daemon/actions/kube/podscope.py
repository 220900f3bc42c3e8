"""What the blast-radius and short-circuit guards count a pod action against: the pod as
cached, its workload by the owner chain, that workload's live pods, and the limits that
apply (the rule's `blast_radius:` over [kubernetes.blast_radius])."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from daemon.actions.guards import GuardContext
from daemon.actions.params import ACTIONS
from daemon.core.events import Ref
from daemon.core.rules import Rule
from daemon.kube.cache import Cache
from daemon.kube.owners import Owner, pods_of, workload

POD = "kubernetes/pod"


@dataclass(frozen=True, slots=True)
class Limits:
    max_workload_share: float
    max_namespace_pods: int
    window: float
    max_unhealthy_share: float

    def for_rule(self, rule: Rule) -> Limits:
        own = rule.blast_radius
        if own is None:
            return self
        return dataclasses.replace(self, **{k: v for k, v in own.model_dump().items()
                                            if v is not None})


@dataclass(frozen=True, slots=True)
class PodScope:
    pod: dict[str, Any]
    namespace: str
    # None: no controller owns the pod (only the namespace limit applies).
    workload: Owner | None
    # The workload's pods not being deleted; the target among them.
    pods: list[dict[str, Any]]

    def describe(self) -> str:
        assert self.workload is not None
        return f"{self.workload.kind} {self.namespace}/{self.workload.name}"


def pod_actions(ctx: GuardContext) -> list[str]:
    """The plan's steps that change a pod (evict, delete_pod, quarantine)."""
    return [spec.name for spec in ctx.plan
            if (info := ACTIONS.get(spec.name)) is not None and info.mutating
            and info.acts_on == POD]


def scope_of(cache: Cache, target: Ref) -> PodScope | str:
    """The target pod's scope, or why it cannot be counted (then nothing may act)."""
    pod = cache.get("Pod", target.namespace, target.name)
    if pod is None or (target.id and pod["metadata"].get("uid") != target.id):
        return (f"pod {target.namespace}/{target.name} is not in the cache: its workload and "
                "namespace cannot be counted")
    owner = workload(cache, pod)
    if owner is None:
        return PodScope(pod, target.namespace, None, [])
    # By the owner's uid, which its ownerReference names even when it is not cached.
    found = pods_of(cache, owner.object or {"metadata": {"uid": owner.uid}})
    if not any(p["metadata"].get("uid") == pod["metadata"].get("uid") for p in found):
        # A lookup that finds nothing (not even the pod it started from) acts on nothing.
        return (f"the pods of {owner.kind} {target.namespace}/{owner.name} could not be "
                "found by their owner chain in the cache: refusing rather than guessing")
    return PodScope(pod, target.namespace, owner,
                    [p for p in found if not p["metadata"].get("deletionTimestamp")])
