"""Kubernetes objects trimmed to what rules and actions read, as client-go's transform
functions do before an informer caches them.

A cached Pod costs what its trimmed form costs: managedFields, env, probes, resources
and the last-applied annotation are most of a Pod's bytes and nothing remedyd decides
on. A Deployment keeps its whole pod template (its new_revision and a rollback's
superseded check compare it); a ReplicaSet keeps none: only its metadata is read (owner
chain, revision, age), and a rollback reads the templates it sends back fresh from the
API server, as kubectl does. Strings are interned: ten thousand Pods repeat the same keys and
mostly the same values ("True", "Running", image names), and json.loads shares keys
only within one document.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeAlias

import msgspec

# A field spec: None keeps the value whole; a dict keeps only those keys of a mapping
# (of every mapping, for a list of them), each by its own spec; an Only keeps some items
# of a list; an If keeps a mapping only when what its spec picks of it is of use.
Spec: TypeAlias = "dict[str, Spec] | Only | If | None"


class _Drop:
    """What an Only makes of a list it keeps nothing of: the key goes too, so an object
    without what it looks for costs nothing more than before."""


DROP: Any = _Drop()


@dataclass(frozen=True, slots=True)
class Only:
    """The items of a list of mappings that `keep` accepts, each as `fix` makes it, then
    picked by `spec`. `keep` and `fix` read only the keys of `spec`: the watch decoder
    applies them to items it decoded with those keys alone."""

    spec: dict[str, Spec]
    keep: Callable[[dict[str, Any]], bool]
    fix: Callable[[dict[str, Any]], dict[str, Any]] | None = None

    def pick(self, value: Any) -> Any:
        """What trim() keeps of `value` (raw): the items, picked; DROP for none."""
        if type(value) is not list:
            return DROP
        fix, keep, spec = self.fix, self.keep, self.spec
        out = [pick(item if fix is None else fix(item), spec) for item in value
               if type(item) is dict and keep(item)]
        return out if out else DROP

    def refine(self, value: Any) -> Any:
        """The same of `value` whose items have the keys of `spec` only already (the
        watch decoder's), not interned yet."""
        if type(value) is not list:
            return DROP
        fix, keep = self.fix, self.keep
        out = [item if fix is None else fix(item) for item in value
               if type(item) is dict and keep(item)]
        return out if out else DROP

LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"

METADATA: dict[str, Spec] = {
    "name": None, "namespace": None, "uid": None, "resourceVersion": None,
    "generation": None, "labels": None, "annotations": None, "ownerReferences": None,
    "deletionTimestamp": None, "creationTimestamp": None,
}
_CONDITIONS: Spec = {"type": None, "status": None, "reason": None, "message": None,
                     "lastTransitionTime": None}
# What the security checks read of a container besides its securityContext: a host port
# (PSS baseline) and the names of env variables that look like secrets given as literal
# values (CIS 5.4.1). Neither is kept otherwise: a Pod without them does not grow, and a
# literal value is replaced by "", so no secret sits in the cache, the audit log or a
# drift diff.
_SECRETISH = re.compile(r"password|secret|token|key", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class If:
    """A mapping picked by `spec`, kept only when `keep` accepts what was picked (else
    its key goes, as for an Only that keeps nothing)."""

    spec: dict[str, Spec]
    keep: Callable[[dict[str, Any]], bool]

    def pick(self, value: Any) -> Any:
        if type(value) is not dict:
            return DROP
        picked = pick(value, self.spec)
        return picked if self.keep(picked) else DROP

    def refine(self, value: Any) -> Any:
        if type(value) is not dict:
            return DROP
        picked = refine(value, self.spec)
        return picked if self.keep(picked) else DROP


# A probe's or lifecycle hook's host (PSS baseline: none may be set, or the kubelet
# reaches another host on the Pod's behalf); a probe without one is not kept.
def _sends_to_a_host(handler: dict[str, Any]) -> bool:
    return any(type(action) is dict and action.get("host") for action in handler.values())


def _nonempty(value: dict[str, Any]) -> bool:
    return bool(value)


_HANDLER = If({"httpGet": {"host": None}, "tcpSocket": {"host": None}}, _sends_to_a_host)
_LIFECYCLE = If({"postStart": _HANDLER, "preStop": _HANDLER}, _nonempty)


def _host_port(port: dict[str, Any]) -> bool:
    return port.get("hostPort") not in (None, 0)


def _literal_secret(env: dict[str, Any]) -> bool:
    name = env.get("name")
    return "value" in env and type(name) is str and _SECRETISH.search(name) is not None


def _redacted(env: dict[str, Any]) -> dict[str, Any]:
    return {"name": env["name"], "value": ""}


# A Pod's volumes: their name, a hostPath whole (its path is checked), and the kind of
# every other source as an empty mapping: the restricted Pod Security Standard allows
# only some kinds (nfs, iscsi, gitRepo... are refused), and what they mount is nothing
# remedyd reads.
VOLUME_SOURCES = (
    "awsElasticBlockStore", "azureDisk", "azureFile", "cephfs", "cinder", "configMap",
    "csi", "downwardAPI", "emptyDir", "ephemeral", "fc", "flexVolume", "flocker",
    "gcePersistentDisk", "gitRepo", "glusterfs", "image", "iscsi", "nfs",
    "persistentVolumeClaim", "photonPersistentDisk", "portworxVolume", "projected",
    "quobyte", "rbd", "scaleIO", "secret", "storageos", "vsphereVolume")


def _any_volume(volume: dict[str, Any]) -> bool:
    return True


def _volume_kinds(volume: dict[str, Any]) -> dict[str, Any]:
    return {key: value if key in ("name", "hostPath") else {} for key, value in volume.items()}


_VOLUME = Only({"name": None, "hostPath": None, **dict.fromkeys(VOLUME_SOURCES)},
               _any_volume, _volume_kinds)

_CONTAINER: Spec = {
    "name": None, "image": None, "securityContext": None,
    "ports": Only({"containerPort": None, "hostPort": None, "protocol": None}, _host_port),
    "env": Only({"name": None, "value": None}, _literal_secret, _redacted),
    "livenessProbe": _HANDLER, "readinessProbe": _HANDLER, "startupProbe": _HANDLER,
    "lifecycle": _LIFECYCLE,
}
_CONTAINER_STATUS: Spec = {"name": None, "image": None, "containerID": None,
                           "restartCount": None, "state": None, "lastState": None,
                           "ready": None, "started": None}
_REPLICAS_SPEC: dict[str, Spec] = {"replicas": None, "selector": None, "minReadySeconds": None}
_DEPLOYMENT_SPEC: dict[str, Spec] = {
    **_REPLICAS_SPEC, "template": None, "paused": None, "progressDeadlineSeconds": None,
    "strategy": None,
}
_EVENT: dict[str, Spec] = {
    # core/v1
    "involvedObject": None, "message": None, "count": None, "firstTimestamp": None,
    "lastTimestamp": None, "source": None,
    # events.k8s.io/v1
    "regarding": None, "note": None, "deprecatedCount": None,
    "deprecatedFirstTimestamp": None, "deprecatedLastTimestamp": None, "series": None,
    "reportingController": None,
    # both
    "reason": None, "type": None, "eventTime": None, "action": None,
}

_BINDING: dict[str, Spec] = {"roleRef": None, "subjects": None}

SPECS: dict[str, dict[str, Spec]] = {
    "Pod": {
        "spec": {
            "nodeName": None, "hostNetwork": None, "hostPID": None, "hostIPC": None,
            "restartPolicy": None, "serviceAccountName": None, "priorityClassName": None,
            "automountServiceAccountToken": None, "hostUsers": None, "os": None,
            "securityContext": None,
            "containers": _CONTAINER, "initContainers": _CONTAINER,
            "ephemeralContainers": _CONTAINER,
            "volumes": _VOLUME,
        },
        "status": {
            "phase": None, "reason": None, "message": None, "startTime": None,
            "conditions": _CONDITIONS,
            "containerStatuses": _CONTAINER_STATUS, "initContainerStatuses": _CONTAINER_STATUS,
        },
    },
    "ReplicaSet": {"spec": _REPLICAS_SPEC, "status": None},
    "Deployment": {"spec": _DEPLOYMENT_SPEC, "status": None},
    "Node": {
        "spec": {"unschedulable": None, "taints": None},
        # Not lastHeartbeatTime: it changes every few seconds and tells nothing.
        "status": {"conditions": _CONDITIONS},
    },
    "Event": _EVENT,
    # Security-drift checks read what these grant, isolate or mount, nothing else.
    "Namespace": {"status": {"phase": None}},
    "NetworkPolicy": {"spec": None},
    "Role": {"rules": None},
    "ClusterRole": {"rules": None, "aggregationRule": None},
    "RoleBinding": _BINDING,
    "ClusterRoleBinding": _BINDING,
    "ServiceAccount": {"automountServiceAccountToken": None, "secrets": None,
                       "imagePullSecrets": None},
}
KINDS = frozenset(SPECS)


class TrimError(ValueError):
    """An object that is not a Kubernetes object of a kind remedyd watches."""


def trim(obj: Any) -> dict[str, Any]:
    """The parts of `obj` (a `kubectl get -o json` item) that remedyd keeps."""
    if not isinstance(obj, dict):
        raise TrimError(f"expected a Kubernetes object (a JSON object), got {type(obj).__name__}")
    kind = obj.get("kind")
    spec = SPECS.get(kind) if isinstance(kind, str) else None
    metadata = obj.get("metadata")
    if spec is None:
        raise TrimError(f"{describe(obj)}: not a watched kind "
                        f"(watched: {', '.join(sorted(KINDS))})")
    if not isinstance(metadata, dict) or not isinstance(metadata.get("name"), str) or not (
            metadata["name"]):
        raise TrimError(f"{describe(obj)}: metadata.name missing or not a string")
    out: dict[str, Any] = {"apiVersion": _short(obj.get("apiVersion")), "kind": _short(kind),
                           "metadata": pick(metadata, METADATA)}
    annotations = out["metadata"].get("annotations")
    if isinstance(annotations, dict) and LAST_APPLIED in annotations:
        out["metadata"]["annotations"] = {k: v for k, v in annotations.items()
                                          if k != LAST_APPLIED}
    for key, sub in spec.items():
        if key in obj:
            out[key] = pick(obj[key], sub)
    return out


class Canon:
    """One copy of the parts that are equal across the objects of one listing.

    The replicas of a Deployment have the same containers, security context, labels and
    owner reference, each built again per Pod by a list's decode and trim: ten thousand
    Pods hold ten thousand equal copies. Each dict or list directly under metadata and
    spec of a listed object is replaced by the first equal one the listing saw (equal as
    JSON, so 1, 1.0 and true stay apart), item by item for a list that differs as a
    whole (a Pod's volumes: its token volume's name is its own). Safe because cached
    objects are never changed in place (see share()); a watch update keeps what it
    shares with its object's cached version, so the sharing lasts until a part changes.
    Kept for one listing only: nothing outlives the objects that use it.
    """

    __slots__ = ("_seen",)

    def __init__(self) -> None:
        self._seen: dict[bytes, Any] = {}

    def __call__(self, obj: dict[str, Any]) -> dict[str, Any]:
        seen = self._seen
        for part in ("metadata", "spec"):
            fields = obj.get(part)
            if type(fields) is not dict:
                continue
            for key, value in fields.items():
                kind = type(value)
                if (kind is not dict and kind is not list) or not value:
                    continue
                text = _encode(value)
                found = seen.get(text)
                if found is None:
                    seen[text] = value
                    if kind is list:
                        for i, item in enumerate(value):
                            if type(item) is dict:
                                value[i] = seen.setdefault(_encode(item), item)
                else:
                    fields[key] = found
        return obj


def describe(obj: Any) -> str:
    """kind namespace/name of a raw object, for error messages."""
    if not isinstance(obj, dict):
        return repr(obj)[:60]
    metadata = obj.get("metadata")
    if not isinstance(metadata, dict):
        metadata = {}
    name = f"{metadata.get('namespace')}/{metadata.get('name')}" if metadata.get(
        "namespace") else str(metadata.get("name"))
    return f"{obj.get('kind', '?')} {name}"


def pick(value: Any, spec: Spec) -> Any:
    """The parts of `value` that `spec` keeps, interned."""
    if spec is None:
        return _whole(value)
    if isinstance(spec, Only | If):
        return spec.pick(value)
    if type(value) is dict:
        # The spec's keys are interned already (literals).
        out = {k: _whole(value[k]) if sub is None else pick(value[k], sub)
               for k, sub in spec.items() if k in value}
        if id(spec) in _FILTERING:
            for key in [k for k, v in out.items() if v is DROP]:
                del out[key]
        return out
    if type(value) is list:
        return [pick(item, spec) for item in value]
    return _whole(value)


def refine(value: Any, spec: Spec) -> Any:
    """`value`, decoded with the keys `spec` picks only (the watch decoder's Structs),
    with the Only filters of `spec` applied too, as pick() applies them; changed in
    place (the caller's own fresh copy)."""
    if isinstance(spec, Only | If):
        return spec.refine(value)
    if not isinstance(spec, dict) or not filters(spec):
        return value
    if type(value) is list:
        return [refine(item, spec) for item in value]
    if type(value) is dict:
        for key, sub in spec.items():
            if key in value and filters(sub):
                kept = refine(value[key], sub)
                if kept is DROP:
                    del value[key]
                else:
                    value[key] = kept
    return value


def filters(spec: Spec) -> bool:
    """Whether `spec` drops list items somewhere (an Only in it)."""
    return type(spec) is Only or type(spec) is If or (
        type(spec) is dict and id(spec) in _FILTERS)


def _whole(value: Any) -> Any:
    """A copy of `value` with its keys and short strings interned (the hot path: one call
    per container, not per leaf)."""
    kind = type(value)
    if kind is str:
        return _short(value)
    if kind is dict:
        return {_intern(k): (v if type(v) is not str or len(v) > 64 else _intern(v))
                if type(v) not in _NESTED else _whole(v) for k, v in value.items()}
    if kind is list:
        return [_whole(item) for item in value]
    return value


_NESTED = (dict, list)
_intern = sys.intern


def _short(value: Any) -> Any:
    # Long strings (messages, hashes) rarely repeat; interning them only fills the table.
    return _intern(value) if type(value) is str and len(value) <= 64 else value


def share(new: Any, old: Any) -> Any:
    """`new` (trimmed, not interned yet) as trim() would have made it, with the parts that
    are the same as in `old` (the cached object it replaces) taken from `old`.

    Most updates of a Pod move only its resourceVersion: the rest is taken over as it is,
    instead of copied and interned string by string again. Cached objects are never
    changed in place, so old and new may share parts.
    """
    if type(new) is dict and type(old) is dict:
        get, out = old.get, {}
        for key, value in new.items():
            before = get(key, _MISSING)
            if type(value) is str:  # most of them: _same and _short, inlined
                out[_intern(key)] = before if type(before) is str and value == before else (
                    _intern(value) if len(value) <= 64 else value)
            else:
                out[_intern(key)] = before if _same(value, before) else share(value, before)
        return out
    if type(new) is list and type(old) is list and len(new) == len(old):
        return [before if _same(item, before) else share(item, before)
                for item, before in zip(new, old, strict=True)]
    return _whole(new)


def _same(new: Any, old: Any) -> bool:
    """Whether `old` can stand for `new`: equal, of the same JSON types throughout (1, 1.0
    and true are equal in Python, and so are -0.0 and 0.0), keys in the same order."""
    kind = type(new)
    if kind is not type(old):
        return False
    if kind is str or kind is int or kind is bool or new is None:
        return bool(new == old)
    if kind is float:
        return False  # -0.0 == 0.0; floats are rare in Kubernetes objects
    return bool(new == old) and _encode(new) == _encode(old)


_MISSING = object()
_encode = msgspec.json.encode


def _walk(spec: Spec, found: set[int], direct: set[int]) -> bool:
    if isinstance(spec, Only | If):
        _walk(spec.spec, found, direct)
        return True
    if spec is None:
        return False
    inner = [_walk(sub, found, direct) for sub in spec.values()]
    if any(type(sub) is Only or type(sub) is If for sub in spec.values()):
        direct.add(id(spec))
    if any(inner):
        found.add(id(spec))
        return True
    return False


# The ids of the dict specs with an Only somewhere below (refine() walks only those) and
# of those with one as a direct child (pick() drops their DROP keys).
_FILTERS: set[int] = set()
_FILTERING: set[int] = set()
for _spec in SPECS.values():
    _walk(_spec, _FILTERS, _FILTERING)
