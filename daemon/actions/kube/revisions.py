"""A Deployment's revisions as `kubectl rollout undo` reads them from its ReplicaSets, and
the JSON patch it sends, encoded as kubectl (Go's encoding/json) encodes it.

Mirrors kubectl's polymorphichelpers/rollback.go: the ReplicaSets it controls (by
ownerReference uid), the current one (template equal to the Deployment's, ignoring
pod-template-hash), the previous revision (the second highest `revision` annotation),
and the annotations replace that keeps the Deployment's bookkeeping keys and takes the
rest from the ReplicaSet rolled back to.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

REVISION = "deployment.kubernetes.io/revision"
HASH = "pod-template-hash"
# kubectl's annotationsToSkip: the Deployment keeps its own values of these.
ANNOTATIONS_TO_SKIP = frozenset({
    "kubectl.kubernetes.io/last-applied-configuration",
    "deployment.kubernetes.io/revision-history",
    REVISION,
    "deployment.kubernetes.io/desired-replicas",
    "deployment.kubernetes.io/max-replicas",
    "deprecated.deployment.rollback.to",
})

Obj = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Revision:
    """One ReplicaSet of a Deployment, as a revision."""

    number: int
    hash: str
    name: str
    replicaset: Obj

    @property
    def images(self) -> list[str]:
        return images(self.replicaset["spec"]["template"])

    def label(self) -> str:
        return f"revision {self.number} ({self.name}, {', '.join(self.images) or 'no image'})"


class NoRevision(ValueError):
    """What kubectl would answer instead of rolling back."""


def revision_number(obj: Obj) -> int | None:
    """The `revision` annotation; a missing one counts as 0, an unreadable one as none (as
    deploymentutil.Revision does)."""
    value = (_metadata(obj).get("annotations") or {}).get(REVISION)
    if value is None:
        return 0
    try:
        return int(str(value))
    except ValueError:
        return None


def without_hash(template: Obj) -> dict[str, Any]:
    """A pod template without its pod-template-hash label (labels left empty are dropped, as
    Go's omitempty does)."""
    out = copy.deepcopy(dict(template))
    metadata = out.get("metadata")
    if isinstance(metadata, dict) and isinstance(metadata.get("labels"), dict):
        metadata["labels"].pop(HASH, None)
        if not metadata["labels"]:
            del metadata["labels"]
    return out


def owned(deployment: Obj, replicasets: Iterable[Obj]) -> list[Obj]:
    """The ReplicaSets the Deployment controls (a selector can match others' too)."""
    uid = _metadata(deployment).get("uid")
    return [rs for rs in replicasets
            if uid and any(ref.get("uid") == uid and ref.get("controller")
                           for ref in _metadata(rs).get("ownerReferences") or [])]


def as_revision(rs: Obj) -> Revision | None:
    number = revision_number(rs)
    template = (rs.get("spec") or {}).get("template")
    if number is None or not isinstance(template, dict):
        return None
    labels = (template.get("metadata") or {}).get("labels") or {}
    return Revision(number, str(labels.get(HASH) or ""), str(_metadata(rs).get("name")), rs)


def current(deployment: Obj, replicasets: Iterable[Obj]) -> Revision | None:
    """The ReplicaSet whose template is the Deployment's (kubectl's FindNewReplicaSet)."""
    want = without_hash((deployment.get("spec") or {}).get("template") or {})
    mine = sorted(owned(deployment, replicasets),
                  key=lambda rs: str(_metadata(rs).get("creationTimestamp") or ""))
    for rs in mine:
        if without_hash((rs.get("spec") or {}).get("template") or {}) == want:
            return as_revision(rs)
    return None


def target(deployment: Obj, replicasets: Iterable[Obj], to_revision: int | None) -> Revision:
    """The revision `kubectl rollout undo [--to-revision=N]` rolls back to (deploymentRevision),
    or NoRevision with kubectl's reason."""
    name = _metadata(deployment).get("name")
    mine = owned(deployment, replicasets)
    new = current(deployment, mine)
    new_rs = new.replicaset if new is not None else None
    # kubectl walks the old ReplicaSets, then the new one.
    ordered = [rs for rs in mine if rs is not new_rs] + ([new_rs] if new_rs is not None else [])
    latest: Revision | None = None
    previous: Revision | None = None
    for rs in ordered:
        revision = as_revision(rs)
        if revision is None:
            continue
        if to_revision is not None:
            if revision.number == to_revision:
                return revision
        elif latest is None or latest.number < revision.number:
            previous, latest = latest, revision
        elif previous is None or previous.number < revision.number:
            previous = revision
    if to_revision is not None:
        raise NoRevision(f"unable to find specified revision {to_revision} in history")
    if previous is None:
        raise NoRevision(f'no rollout history found for deployment "{name}"')
    return previous


def same_template(deployment: Obj, revision: Revision) -> bool:
    return without_hash((deployment.get("spec") or {}).get("template") or {}) == without_hash(
        revision.replicaset["spec"]["template"])


def undo_patch(deployment: Obj, revision: Revision) -> list[dict[str, Any]]:
    """kubectl's JSON patch: the revision's template without its hash, and the annotations."""
    own = _metadata(deployment).get("annotations") or {}
    annotations = {k: v for k, v in own.items() if k in ANNOTATIONS_TO_SKIP}
    annotations.update({k: v for k, v in (_metadata(revision.replicaset).get("annotations")
                                          or {}).items() if k not in ANNOTATIONS_TO_SKIP})
    return [
        {"op": "replace", "path": "/spec/template",
         "value": without_hash(revision.replicaset["spec"]["template"])},
        # A Go map is encoded with its keys sorted.
        {"op": "replace", "path": "/metadata/annotations",
         "value": dict(sorted(annotations.items()))},
    ]


def go_json(value: Any) -> bytes:
    """`value` encoded as Go's json.Marshal does: compact, UTF-8, with <, >, & and U+2028/9
    escaped. Struct fields keep the order the API server (Go) sent them in."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    # Outside strings JSON has none of these characters, so replacing them is safe.
    for char, escaped in _GO_ESCAPES:
        text = text.replace(char, escaped)
    return text.encode()


_GO_ESCAPES = (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
               ("\u2028", "\\u2028"), ("\u2029", "\\u2029"))


class BadSelector(ValueError):
    """A selector that would select everything (empty, missing) or cannot be read."""


def selector(deployment: Obj) -> str:
    """The Deployment's label selector as a query (LabelSelectorAsSelector: sorted by key).
    An empty or missing selector is BadSelector, never "" (which lists everything)."""
    spec = (deployment.get("spec") or {}).get("selector")
    name = f"deployment {_metadata(deployment).get('namespace')}/" \
           f"{_metadata(deployment).get('name')}"
    if not isinstance(spec, Mapping):
        raise BadSelector(f"{name} has no selector: it would select everything")
    parts = [(str(k), f"{k}={v}") for k, v in (spec.get("matchLabels") or {}).items()]
    for expr in spec.get("matchExpressions") or []:
        key, op, values = str(expr.get("key")), expr.get("operator"), expr.get("values") or []
        listed = ",".join(sorted(str(v) for v in values))
        text = {"In": f"{key} in ({listed})", "NotIn": f"{key} notin ({listed})",
                "Exists": key, "DoesNotExist": f"!{key}"}.get(str(op))
        if text is None:
            raise BadSelector(f"{name}: selector operator {op!r} on {key!r} is not one of In, "
                              "NotIn, Exists, DoesNotExist")
        parts.append((key, text))
    if not parts:
        raise BadSelector(f"{name} has an empty selector: it would select everything")
    return ",".join(text for _, text in sorted(parts))


def images(template: Obj) -> list[str]:
    return [str(c.get("image", "")) for c in (template.get("spec") or {}).get("containers") or []
            if isinstance(c, dict)]


def _metadata(obj: Obj) -> Mapping[str, Any]:
    metadata = obj.get("metadata")
    return metadata if isinstance(metadata, Mapping) else {}
