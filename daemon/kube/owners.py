"""Owner chains (Pod -> ReplicaSet -> Deployment) read from the cache, and the target an
action acts on when it is not the event's subject (a Pod's rollback acts on its
Deployment).

A chain is followed by each ownerReference's uid (controller: true), never by name, so
a Deployment deleted and created again under the same name is not mistaken for the
one that owned the Pod. A broken chain resolves to None: an action then has no target,
never a guessed or a wider one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from daemon.core.events import Ref
from daemon.kube.cache import Cache, controller_ref
from daemon.kube.trim import KINDS

SOURCE = "kubernetes"
# Deeper than any real chain (Pod -> ReplicaSet -> Deployment, Pod -> Job -> CronJob).
MAX_DEPTH = 8


@dataclass(frozen=True, slots=True)
class Owner:
    kind: str
    name: str
    uid: str
    # The owner's trimmed object when the cache holds it.
    object: dict[str, Any] | None


def ref_of(obj: dict[str, Any]) -> Ref:
    metadata = obj["metadata"]
    return Ref(source=SOURCE, kind=str(obj["kind"]).lower(), name=metadata["name"],
               id=metadata.get("uid") or "", namespace=metadata.get("namespace") or "")


def controller(cache: Cache, obj: dict[str, Any]) -> Owner | None:
    """The object's controller as its ownerReference names it, with the cached object if
    the cache holds that very one (same uid and kind)."""
    ref = controller_ref(obj)
    if ref is None or not isinstance(ref.get("uid"), str) or not isinstance(ref.get("kind"), str):
        return None
    cached = cache.by_uid(ref["uid"])
    if cached is not None and cached["kind"] != ref["kind"]:
        cached = None
    return Owner(kind=ref["kind"], name=str(ref.get("name", "")), uid=ref["uid"], object=cached)


def chain(cache: Cache, obj: dict[str, Any]) -> list[Owner]:
    """The controllers above `obj`, nearest first; it stops at the first one not cached
    (that one included: its ownerReference still names it)."""
    owners: list[Owner] = []
    current: dict[str, Any] | None = obj
    while current is not None and len(owners) < MAX_DEPTH:
        owner = controller(cache, current)
        if owner is None:
            break
        owners.append(owner)
        current = owner.object
    return owners


def workload(cache: Cache, obj: dict[str, Any]) -> Owner | None:
    """The top of the chain: a Pod's Deployment, or its ReplicaSet when that has none (or
    is not cached), or its StatefulSet, DaemonSet, Job..."""
    owners = chain(cache, obj)
    return owners[-1] if owners else None


def resolve_target(cache: Cache, subject: Ref, target_kind: str) -> Ref | None:
    """What an action on `target_kind` ("deployment", "pod", ...) acts on, for an event
    about `subject`; None when the cache cannot follow the chain that far."""
    if subject.source != SOURCE:
        return None
    obj = cache.get(_api_kind(subject.kind), subject.namespace, subject.name)
    if obj is None or (subject.id and obj["metadata"].get("uid") != subject.id):
        return None  # gone, or another object by now under the same name
    if subject.kind == target_kind:
        return ref_of(obj)
    for owner in chain(cache, obj):
        if owner.object is None:
            return None
        if owner.kind.lower() == target_kind:
            return ref_of(owner.object)
    return None


def pods_of(cache: Cache, obj: dict[str, Any]) -> list[dict[str, Any]]:
    """The Pods a workload controls: a ReplicaSet's own, a Deployment's through its
    ReplicaSets."""
    uid = obj["metadata"].get("uid")
    if not uid:
        return []
    pods = cache.children(uid, "Pod")
    for child in cache.children(uid, "ReplicaSet"):
        pods.extend(pods_of(cache, child))
    return pods


# A Ref's kind ("clusterrolebinding") -> the API's ("ClusterRoleBinding").
_KINDS = {kind.lower(): kind for kind in KINDS}


def _api_kind(kind: str) -> str:
    return _KINDS.get(kind, kind)
