"""A Deployment and ReplicaSet controller good enough for rollouts, `rollout status` and
`rollout undo`: ReplicaSets named NAME-<pod-template-hash>, revision annotations, owned Pods,
and the Deployment status fields kubectl reads. It reconciles synchronously after each write
(see Testbed.settle), so a test sees a settled cluster as soon as its request returns."""

from __future__ import annotations

import copy
import json
from typing import Any

from tests.kube.resources import BY_PATH
from tests.kube.selectors import match_labels_selector
from tests.kube.store import Obj, Store, now_rfc3339, random_suffix

DEPLOYMENTS = BY_PATH[("apps/v1", "deployments")]
REPLICASETS = BY_PATH[("apps/v1", "replicasets")]
PODS = BY_PATH[("v1", "pods")]
NODES = BY_PATH[("v1", "nodes")]

REVISION = "deployment.kubernetes.io/revision"
REVISION_HISTORY = "deployment.kubernetes.io/revision-history"
DESIRED = "deployment.kubernetes.io/desired-replicas"
MAX = "deployment.kubernetes.io/max-replicas"
HASH = "pod-template-hash"
# Annotations the real controller does not copy from a Deployment to its ReplicaSets.
SKIP_COPY = {"kubectl.kubernetes.io/last-applied-configuration", REVISION, REVISION_HISTORY,
             DESIRED, MAX, "deprecated.deployment.rollback.to"}
_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


def template_hash(template: Obj) -> str:
    """FNV-1a 32 of the template, encoded like rand.SafeEncodeString (the real hash covers the
    Go struct, so values differ from a real cluster's, but the shape is the same)."""
    h = 0x811C9DC5
    for b in json.dumps(template, sort_keys=True).encode():
        h = ((h ^ b) * 0x01000193) & 0xFFFFFFFF
    out = ""
    for ch in str(h):
        out += _ALPHABET[ord(ch) % len(_ALPHABET)]
    return out[:10]


def _strip_hash(template: Obj) -> Obj:
    t = copy.deepcopy(template)
    labels = (t.get("metadata") or {}).get("labels")
    if labels:
        labels.pop(HASH, None)
    return t


def _owned_by(obj: Obj, owner: Obj) -> bool:
    return any(r.get("uid") == owner["metadata"]["uid"] and r.get("controller")
               for r in obj["metadata"].get("ownerReferences") or [])


def _owner_ref(owner: Obj) -> dict[str, Any]:
    return {"apiVersion": owner["apiVersion"], "kind": owner["kind"],
            "name": owner["metadata"]["name"], "uid": owner["metadata"]["uid"],
            "controller": True, "blockOwnerDeletion": True}


def pod_ready(pod: Obj) -> bool:
    if pod["metadata"].get("deletionTimestamp"):
        return False
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


def _revision(rs: Obj) -> int:
    try:
        return int((rs["metadata"].get("annotations") or {}).get(REVISION, "0"))
    except ValueError:
        return 0


def _int_or_percent(value: Any, total: int, round_up: bool) -> int:
    if isinstance(value, str) and value.endswith("%"):
        frac = int(value[:-1]) * total
        return -(-frac // 100) if round_up else frac // 100
    return int(value)


class Controller:
    def __init__(self, store: Store) -> None:
        self.store = store
        # Pods whose first container image is in here start crash-looping instead of ready,
        # so a test can roll out a "bad image".
        self.crash_images: set[str] = set()
        self._node_cursor = 0

    # ------------------------------------------------------------- helpers
    def crash_loop(self, namespace: str, name: str, restart_count: int = 3,
                   reason: str = "CrashLoopBackOff") -> Obj:
        """Make a pod look like the kubelet reports a crash-looping container."""
        def change(pod: Obj) -> None:
            _set_crashing(pod, restart_count, reason)
        return self.store.mutate(PODS, namespace, name, change, subresource="status")

    def set_ready(self, namespace: str, name: str, ready: bool) -> Obj:
        def change(pod: Obj) -> None:
            _set_running(pod, ready)
        return self.store.mutate(PODS, namespace, name, change, subresource="status")

    # ----------------------------------------------------------- reconcile
    def reconcile(self) -> None:
        """Run to a fixed point; bounded because each pass only writes real changes."""
        for _ in range(20):
            before = self.store.rv
            for d in self.store.list(DEPLOYMENTS):
                self._sync_deployment(d)
            for rs in self.store.list(REPLICASETS):
                self._sync_replicaset(rs)
            for d in self.store.list(DEPLOYMENTS):
                self._sync_deployment_status(d)
            if self.store.rv == before:
                return

    def _owned_rs(self, d: Obj) -> list[Obj]:
        ns = d["metadata"]["namespace"]
        return [rs for rs in self.store.list(REPLICASETS, ns) if _owned_by(rs, d)]

    def _sync_deployment(self, d: Obj) -> None:
        spec = d.get("spec") or {}
        if spec.get("paused"):
            return
        ns, name = d["metadata"]["namespace"], d["metadata"]["name"]
        template = spec.get("template") or {}
        replicas = int(spec.get("replicas", 1))
        owned = self._owned_rs(d)
        new_rs = next((rs for rs in owned
                       if _strip_hash(rs["spec"]["template"]) == _strip_hash(template)), None)
        max_rev = max((_revision(rs) for rs in owned), default=0)
        copied = {k: v for k, v in (d["metadata"].get("annotations") or {}).items()
                  if k not in SKIP_COPY}
        surge = _int_or_percent(((spec.get("strategy") or {}).get("rollingUpdate") or {})
                                .get("maxSurge", "25%"), replicas, True)
        bookkeeping = {DESIRED: str(replicas), MAX: str(replicas + surge)}
        if new_rs is None:
            h = template_hash(template)
            rs_template = copy.deepcopy(template)
            rs_template.setdefault("metadata", {}).setdefault("labels", {})[HASH] = h
            selector = copy.deepcopy(spec.get("selector") or {})
            selector.setdefault("matchLabels", {})[HASH] = h
            labels = dict((template.get("metadata") or {}).get("labels") or {}) | {HASH: h}
            annotations = copied | bookkeeping | {REVISION: str(max_rev + 1)}
            rs: Obj = {"apiVersion": "apps/v1", "kind": "ReplicaSet",
                  "metadata": {"name": f"{name}-{h}", "namespace": ns, "labels": labels,
                               "annotations": annotations, "ownerReferences": [_owner_ref(d)]},
                  "spec": {"replicas": replicas, "selector": selector,
                           "template": rs_template}}
            self.store.create(REPLICASETS, ns, rs)
        else:
            rev = _revision(new_rs)

            def adopt(rs: Obj) -> None:
                ann = rs["metadata"].setdefault("annotations", {})
                if rev < max_rev:
                    history = [h for h in ann.get(REVISION_HISTORY, "").split(",") if h]
                    ann[REVISION_HISTORY] = ",".join([*history, str(rev)])
                    ann[REVISION] = str(max_rev + 1)
                for k in list(ann):
                    if k not in SKIP_COPY and k not in copied:
                        del ann[k]
                ann.update(copied | bookkeeping)
                rs["spec"]["replicas"] = replicas

            self.store.mutate(REPLICASETS, ns, new_rs["metadata"]["name"], adopt)
        current = next(rs for rs in self._owned_rs(d)
                       if _strip_hash(rs["spec"]["template"]) == _strip_hash(template))
        revision = str(_revision(current))
        if (d["metadata"].get("annotations") or {}).get(REVISION) != revision:
            # The real controller mirrors the new ReplicaSet's revision onto the Deployment,
            # and `rollout undo` then carries it in its annotations replace.
            self.store.mutate(DEPLOYMENTS, ns, name, lambda o: o["metadata"].setdefault(
                "annotations", {}).__setitem__(REVISION, revision))
        for rs in self._owned_rs(d):
            if _strip_hash(rs["spec"]["template"]) != _strip_hash(template) \
                    and rs["spec"].get("replicas", 0) != 0:
                self.store.mutate(REPLICASETS, ns, rs["metadata"]["name"],
                                  lambda o: o["spec"].__setitem__("replicas", 0))

    def _sync_replicaset(self, rs: Obj) -> None:
        ns = rs["metadata"]["namespace"]
        want = int(rs["spec"].get("replicas", 1))
        pods = [p for p in self.store.list(PODS, ns) if _owned_by(p, rs)]
        for _ in range(want - len(pods)):
            self._create_pod(rs)
        for extra in sorted(pods, key=lambda p: p["metadata"]["creationTimestamp"],
                            reverse=True)[:max(0, len(pods) - want)]:
            self.store.delete(PODS, ns, extra["metadata"]["name"])
        pods = [p for p in self.store.list(PODS, ns) if _owned_by(p, rs)]
        select = match_labels_selector(rs["spec"].get("selector") or {})
        ready = sum(1 for p in pods if pod_ready(p))
        status: Obj = {"replicas": len(pods), "fullyLabeledReplicas": sum(1 for p in pods
                                                                     if select(p)),
                  "readyReplicas": ready, "availableReplicas": ready,
                  "observedGeneration": rs["metadata"]["generation"]}
        status = {k: v for k, v in status.items() if v or k in ("replicas", "observedGeneration")}
        if rs.get("status") != status:
            self.store.mutate(REPLICASETS, ns, rs["metadata"]["name"],
                              lambda o: o.__setitem__("status", status), subresource="status")

    def _create_pod(self, rs: Obj) -> None:
        template = rs["spec"]["template"]
        meta = copy.deepcopy(template.get("metadata") or {})
        meta.update({"name": f"{rs['metadata']['name']}-{random_suffix()}",
                     "generateName": f"{rs['metadata']['name']}-",
                     "namespace": rs["metadata"]["namespace"],
                     "ownerReferences": [_owner_ref(rs)]})
        spec = copy.deepcopy(template.get("spec") or {})
        nodes = self.store.list(NODES)
        if nodes and "nodeName" not in spec:
            spec["nodeName"] = nodes[self._node_cursor % len(nodes)]["metadata"]["name"]
            self._node_cursor += 1
        pod: Obj = {"metadata": meta, "spec": spec}
        images = [c.get("image") for c in spec.get("containers") or []]
        if images and images[0] in self.crash_images:
            _set_crashing(pod, 1, "CrashLoopBackOff")
        else:
            _set_running(pod, True)
        self.store.create(PODS, meta["namespace"], pod)

    def _sync_deployment_status(self, d: Obj) -> None:
        spec = d.get("spec") or {}
        replicas = int(spec.get("replicas", 1))
        owned = self._owned_rs(d)
        template = spec.get("template") or {}
        new_rs = next((rs for rs in owned
                       if _strip_hash(rs["spec"]["template"]) == _strip_hash(template)), None)

        def count(rs: Obj | None, field: str) -> int:
            return int(((rs or {}).get("status") or {}).get(field, 0))

        total = sum(count(rs, "replicas") for rs in owned)
        available = sum(count(rs, "availableReplicas") for rs in owned)
        ready = sum(count(rs, "readyReplicas") for rs in owned)
        updated = count(new_rs, "replicas")
        unavailable_ok = _int_or_percent(((spec.get("strategy") or {}).get("rollingUpdate")
                                          or {}).get("maxUnavailable", "25%"), replicas, False)
        old_status = d.get("status") or {}
        old_conditions = {c["type"]: c for c in old_status.get("conditions") or []}
        now = now_rfc3339()
        complete = updated == replicas and total == replicas and count(new_rs,
                                                                       "availableReplicas") \
            == replicas
        rs_name = new_rs["metadata"]["name"] if new_rs else d["metadata"]["name"]
        if spec.get("paused"):
            progressing = ("Unknown", "DeploymentPaused", "Deployment is paused")
        elif complete:
            progressing = ("True", "NewReplicaSetAvailable",
                           f'ReplicaSet "{rs_name}" has successfully progressed.')
        elif old_conditions.get("Progressing", {}).get("reason") == "ProgressDeadlineExceeded":
            c = old_conditions["Progressing"]
            progressing = (c["status"], c["reason"], c["message"])
        else:
            progressing = ("True", "ReplicaSetUpdated",
                           f'ReplicaSet "{rs_name}" is progressing.')
        is_available = available >= replicas - unavailable_ok
        availability = ("True", "MinimumReplicasAvailable",
                        "Deployment has minimum availability.") if is_available else \
            ("False", "MinimumReplicasUnavailable",
             "Deployment does not have minimum availability.")
        conditions = [_condition("Available", availability, old_conditions.get("Available"),
                                 now),
                      _condition("Progressing", progressing, old_conditions.get("Progressing"),
                                 now)]
        status: Obj = {"observedGeneration": d["metadata"]["generation"], "replicas": total,
                       "updatedReplicas": updated, "readyReplicas": ready,
                       "availableReplicas": available,
                       "unavailableReplicas": max(0, replicas - available),
                       "conditions": conditions}
        status = {k: v for k, v in status.items() if v or k in ("observedGeneration",
                                                                 "conditions")}
        if old_status != status:
            self.store.mutate(DEPLOYMENTS, d["metadata"]["namespace"], d["metadata"]["name"],
                              lambda o: o.__setitem__("status", status), subresource="status")

    def exceed_progress_deadline(self, namespace: str, name: str) -> Obj:
        """What the real controller writes once progressDeadlineSeconds pass without progress."""
        def change(d: Obj) -> None:
            conds = [c for c in (d.get("status") or {}).get("conditions") or []
                     if c["type"] != "Progressing"]
            rs = f"{name}-{template_hash(d['spec']['template'])}"
            conds.append({"type": "Progressing", "status": "False",
                          "reason": "ProgressDeadlineExceeded",
                          "message": f'ReplicaSet "{rs}" has timed out progressing.',
                          "lastUpdateTime": now_rfc3339(), "lastTransitionTime": now_rfc3339()})
            d.setdefault("status", {})["conditions"] = conds
        return self.store.mutate(DEPLOYMENTS, namespace, name, change, subresource="status")


def _condition(kind: str, value: tuple[str, str, str], old: Obj | None, now: str) -> Obj:
    status, reason, message = value
    if old and (old["status"], old["reason"], old["message"]) == value:
        return old
    transition = old["lastTransitionTime"] if old and old["status"] == status else now
    return {"type": kind, "status": status, "lastUpdateTime": now,
            "lastTransitionTime": transition, "reason": reason, "message": message}


def _set_running(pod: Obj, ready: bool) -> None:
    now = now_rfc3339()
    flag = "True" if ready else "False"
    containers = (pod.get("spec") or {}).get("containers") or []
    status = pod.setdefault("status", {})
    status.update({"phase": "Running", "hostIP": "10.0.0.1", "podIP": "10.244.0.10",
                   "startTime": status.get("startTime", now), "qosClass": "BestEffort"})
    status["conditions"] = [
        {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
        {"type": "Initialized", "status": "True", "lastTransitionTime": now},
        {"type": "ContainersReady", "status": flag, "lastTransitionTime": now},
        {"type": "Ready", "status": flag, "lastTransitionTime": now},
    ]
    status["containerStatuses"] = [
        {"name": c.get("name"), "image": c.get("image"), "imageID": "", "ready": ready,
         "restartCount": 0, "started": True, "state": {"running": {"startedAt": now}}}
        for c in containers]


def _set_crashing(pod: Obj, restart_count: int, reason: str) -> None:
    _set_running(pod, False)
    now = now_rfc3339()
    for cs in pod["status"]["containerStatuses"]:
        cs.update({"ready": False, "started": False, "restartCount": restart_count,
                   "state": {"waiting": {"reason": reason, "message":
                                         f"back-off 40s restarting failed container={cs['name']}"
                                         }},
                   "lastState": {"terminated": {"exitCode": 1, "reason": "Error",
                                                "startedAt": now, "finishedAt": now}}})
    for c in pod["status"]["conditions"]:
        if c["type"] in ("Ready", "ContainersReady"):
            names = " ".join(cs["name"] for cs in pod["status"]["containerStatuses"])
            c.update({"reason": "ContainersNotReady",
                      "message": f"containers with unready status: [{names}]"})
