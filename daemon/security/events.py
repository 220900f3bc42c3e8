"""Posture events: what the security checks (`source: security` rules) evaluate.

One event per sighting of an object whose security-relevant view changed (or was first
seen), from the live sources (`origin: live`, or `list` for a relist or reconcile) and
from `remedyd scan` (`origin: scan`, `manifest`). The contract every check is written
against:

- `event.source` "security"; `event.kind` the object's kind in lower case ("container"
  for Docker, "pod", "deployment", "clusterrolebinding"...); `event.action` "observed",
  or "deleted" (with `resolves: ["*"]`, so its findings end).
- `event.subject`: the object itself, as the platform's own source names it
  (`Ref(source="docker", kind="container", id=<container id>, name=<name>)`,
  `Ref(source="kubernetes", kind="deployment", namespace=..., name=..., id=<uid>)`), so
  the actions (docker.stop, kubernetes.quarantine, kubernetes.scale) act on it.
- `event.object`: the object as the platform reports it (`docker inspect`, a
  `kubectl get -o json` item or a manifest document).
- `event.attributes`: the object's security view (`daemon/security/view.py` for
  Kubernetes, `view_docker.py` for Docker: normalised, every key present, so a CEL check
  needs no `has()`), plus:
  - `platform`: "docker" | "kubernetes"; `origin`: "live" | "list" | "scan" | "manifest";
  - `drift`: [{field, before, after}] against the baseline ([] when none or unknown);
    `baseline`: "captured" (first sight), "same", "drifted", "none" (not compared);
  - `waived`: the check ids an operator accepted on this object as it is now.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from daemon.core.events import Event, JSONValue, Ref

SOURCE = "security"
Origin = str  # "live" | "list" | "scan" | "manifest"


def view_of(platform: str, obj: Mapping[str, Any]) -> dict[str, JSONValue]:
    """The security view of an object: what the checks read and the baseline keeps."""
    if platform == "docker":
        from daemon.security.view_docker import docker_view

        return docker_view(obj)
    from daemon.security.view import kube_view

    return kube_view(obj)


def subject_of(platform: str, obj: Mapping[str, Any]) -> Ref:
    if platform == "docker":
        name = str(obj.get("Name") or "").lstrip("/")
        ident = str(obj.get("Id") or "")
        return Ref(source="docker", kind="container", name=name or ident[:12], id=ident)
    metadata = obj.get("metadata") or {}
    return Ref(source="kubernetes", kind=str(obj.get("kind") or "").lower(),
               name=str(metadata.get("name") or ""), id=str(metadata.get("uid") or ""),
               namespace=str(metadata.get("namespace") or ""))


def baseline_key(subject: Ref) -> str:
    """What the baseline is kept under: the name, not the id, since Compose recreates a
    container and a Deployment may be deleted and applied again under the same name."""
    if subject.source == "docker":
        return f"docker/container/{subject.name}"
    if subject.namespace:
        return f"kubernetes/{subject.kind}/{subject.namespace}/{subject.name}"
    return f"kubernetes/{subject.kind}/{subject.name}"


def posture_event(platform: str, obj: Mapping[str, Any], *, origin: Origin,
                  view: Mapping[str, JSONValue] | None = None,
                  drift: Sequence[Mapping[str, JSONValue]] = (), baseline: str = "none",
                  waived: Sequence[str] = (), now: float | None = None,
                  event_id: str = "") -> Event:
    """The posture event of one sighting of `obj` (its view computed unless given)."""
    now = time.time() if now is None else now
    subject = subject_of(platform, obj)
    attributes: dict[str, JSONValue] = dict(view if view is not None else view_of(platform, obj))
    attributes.update(platform=platform, origin=origin,
                      drift=[dict(change) for change in drift], baseline=baseline,
                      waived=list(waived))
    return Event(source=SOURCE, kind=subject.kind, action="observed", subject=subject,
                 id=event_id or f"security:{subject.key}:{now:.6f}", occurred_at=now,
                 observed_at=now, attributes=attributes, object=obj)


def gone_event(subject: Ref, now: float | None = None) -> Event:
    """The object is gone: every finding about it ends."""
    now = time.time() if now is None else now
    return Event(source=SOURCE, kind=subject.kind, action="deleted", subject=subject,
                 id=f"security:{subject.key}:deleted:{now:.6f}", occurred_at=now,
                 observed_at=now, attributes={}, resolves=("*",))
