"""The Kubernetes half of the security posture: every change the Kubernetes source's
cache takes in, handed to the posture tracker (which emits a posture event only when an
object's security view or drift changed).

What is handed over, and what is not:
- objects of the security kinds the cache holds (Pods, Deployments, Namespaces,
  NetworkPolicies, RBAC objects, ServiceAccounts); a first listing or a relist as
  origin "list" (so drift made while remedyd was away is found there), a watch event as
  "live"; a deletion as `gone`;
- not a Pod whose controller chain reaches a cached Deployment: the Deployment's pod
  template is checked, and ten thousand replicas would each repeat its findings. A bare
  Pod, or one of a StatefulSet, DaemonSet or Job (kinds remedyd does not watch), is;
- not a ReplicaSet: the cache keeps none of its template; its Deployment, or its Pods,
  are checked;
- not a change that leaves what the view reads as it was: the watch decoder shares a
  cached object's unchanged parts, so a status update costs an identity test, not a
  view;
- a Namespace's view carries the live count of cached NetworkPolicies in it
  (`networkPolicies`, -1 while that cannot be known: NetworkPolicies not watched
  there, or filtered by a label selector). While NetworkPolicies are watched but not
  listed yet, a Namespace waits for their listing: emitted before, its first view
  would be captured as its baseline with an unknown count and drift a moment later.
  A NetworkPolicy added or deleted emits its Namespace again, so the last one deleted
  raises the finding at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from typing import Any, Protocol

from daemon.core.events import Event, JSONValue, Ref
from daemon.core.rules import SECURITY_KINDS
from daemon.kube.cache import Change, controller_ref
from daemon.kube.trim import KINDS
from daemon.security.events import subject_of, view_of
from daemon.sources.kubernetes import KubernetesSource

log = logging.getLogger("remedyd.source.kubernetes-posture")

PLATFORM = "kubernetes"
# The cached kinds whose objects are checked (ReplicaSets: see above).
CHECKED = frozenset(kind for kind in KINDS if kind.lower() in SECURITY_KINDS) - {"ReplicaSet"}
POLICY = "NetworkPolicy"
NAMESPACE = "Namespace"
UNKNOWN = -1
# An owner chain longer than this is not one Kubernetes makes (Pod, ReplicaSet,
# Deployment): stop there rather than follow a cycle.
CHAIN_MAX = 4
# What the view reads of an object besides the fields beyond metadata and status.
_METADATA_READ = ("labels", "annotations", "ownerReferences")
_UNREAD = ("metadata", "status")


class Tracker(Protocol):
    """What the tap needs of daemon.security.tracker.PostureTracker."""

    def seen(self, platform: str, obj: Any, *, origin: str,
             view: dict[str, JSONValue] | None = None) -> Event | None: ...

    def gone(self, subject: Ref) -> object: ...


class KubePosture:
    name = "kubernetes-posture"

    def __init__(self, source: KubernetesSource, tracker: Tracker) -> None:
        self.source = source
        self.tracker = tracker
        # The Pods handed over (cache key), so their deletion, or their later finding a
        # Deployment above them, ends their findings, and a skipped Pod's does nothing.
        self._reported: set[tuple[str, str]] = set()
        # Namespaces to emit again once the current batch of changes is in (name ->
        # origin), so a relist's or a listing's NetworkPolicies count once, not one by one.
        self._dirty: dict[str, str] = {}
        self._flush_pending = False
        self.counts: Counter[str] = Counter()
        source.on_change(self._changed)
        source.on_listed(self._listed)

    async def run(self) -> None:
        # The work happens in the source's callbacks, as changes come in.
        await asyncio.Event().wait()

    def status(self) -> dict[str, Any]:
        return {"synced": self.source.synced, "pods_checked": len(self._reported),
                **{key: self.counts[key] for key in ("seen", "unchanged", "skipped",
                                                     "gone", "errors")}}

    def _changed(self, change: Change) -> None:
        try:
            self._handle(change)
        except Exception:
            # A bug here must not stop the source's informer, which called us.
            self.counts["errors"] += 1
            log.exception("kubernetes posture: %s change not checked", change.kind)

    def _handle(self, change: Change) -> None:
        kind, old, new = change.kind, change.old, change.new
        origin = "list" if change.initial or change.synthetic else "live"
        if kind == POLICY:
            self._mark((new or old or {}).get("metadata", {}).get("namespace") or "", origin)
        if kind not in CHECKED:
            return
        if new is None:
            if old is not None:
                self._gone(kind, old)
            return
        if old is not None and _unchanged(old, new):
            self.counts["unchanged"] += 1
            return
        if kind == NAMESPACE:
            self._mark(new["metadata"]["name"], origin)
            return
        if kind == "Pod":
            key = (new["metadata"].get("namespace") or "", new["metadata"]["name"])
            if self._under_deployment(new):
                self.counts["skipped"] += 1
                if key in self._reported:
                    self._reported.discard(key)
                    self.tracker.gone(subject_of(PLATFORM, new))
                return
            self._reported.add(key)
        self.counts["seen"] += 1
        self.tracker.seen(PLATFORM, new, origin=origin)

    def _gone(self, kind: str, old: dict[str, Any]) -> None:
        if kind == "Pod":
            key = (old["metadata"].get("namespace") or "", old["metadata"]["name"])
            if key not in self._reported:
                return
            self._reported.discard(key)
        self.counts["gone"] += 1
        self.tracker.gone(subject_of(PLATFORM, old))

    def _under_deployment(self, pod: dict[str, Any]) -> bool:
        cache, current = self.source.cache, pod
        for _ in range(CHAIN_MAX):
            ref = controller_ref(current)
            uid = ref.get("uid") if ref else None
            if not isinstance(uid, str):
                return False
            owner = cache.by_uid(uid)
            if owner is None:
                return False
            if owner.get("kind") == "Deployment":
                return True
            current = owner
        return False

    # -- namespaces and their NetworkPolicies ------------------------------------------

    def _listed(self, kind: str) -> None:
        if kind == POLICY:
            for namespace in self.source.cache.objects(NAMESPACE):
                self._mark(namespace["metadata"]["name"], "list")

    def _mark(self, namespace: str, origin: str) -> None:
        if not namespace:
            return
        if self._dirty.get(namespace) != "list":
            self._dirty[namespace] = origin
        if not self._flush_pending:
            self._flush_pending = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_pending = False
        dirty, self._dirty = self._dirty, {}
        source, cache = self.source, self.source.cache
        watched = source.watches(POLICY) and source.selector is None
        counts: Counter[str] | None = None
        for name, origin in dirty.items():
            obj = cache.get(NAMESPACE, "", name)
            if obj is None:
                continue
            count = UNKNOWN
            if watched and source.covers(POLICY, name):
                if not source.listed(POLICY, name):
                    continue  # its listing marks every namespace again
                if counts is None:
                    counts = Counter(policy["metadata"].get("namespace")
                                     for policy in cache.objects(POLICY))
                count = counts[name]
            self.counts["seen"] += 1
            try:
                view = view_of(PLATFORM, obj)
                view["networkPolicies"] = count
                self.tracker.seen(PLATFORM, obj, origin=origin, view=view)
            except Exception:
                # Called from the event loop: one namespace's failure must not lose the
                # others' (nor end in the loop's exception handler).
                self.counts["errors"] += 1
                log.exception("kubernetes posture: namespace %s not checked", name)


def _unchanged(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """Whether what the security view reads is what it was: by identity, mostly (the
    watch decoder shares a cached object's unchanged parts), else equal (the first
    update after a listing, whose objects carry nothing to share from)."""
    if len(old) != len(new):
        return False
    for key, value in new.items():
        if key not in _UNREAD and not _same(old.get(key, _MISSING), value):
            return False
    before, after = old["metadata"], new["metadata"]
    return all(_same(before.get(key), after.get(key)) for key in _METADATA_READ)


def _same(old: Any, new: Any) -> bool:
    return old is new or old == new


_MISSING = object()
