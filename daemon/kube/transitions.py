"""Cache changes -> the Events rules match: what changed between the cached old object
and the new one, never what the new one merely shows, so a relist or a resync does not
fire a transition again.

Two sorts, which differ only on a kind's first listing (`Change.initial`, when the old
state is unknown, not absent):
- states (crashloop, unschedulable, unready, not_ready, progress_deadline_exceeded) fire
  when entered, and on the first listing when the object is in them: a Pod already crash
  looping when remedyd starts is handled;
- edges (restarted, oom_killed, new_revision, probe_failed) fire only when seen to happen:
  a restart count of 12 at start-up is history, not a restart.
An object new to the cache outside the first listing (created, or created while the
watch was down) starts from nothing: its restarts and OOM kills are edges.

Event ids name the real transition (uid, container, restart count, transition time),
not the resourceVersion that carried it, so the same transition seen again after a
relist or a restart of remedyd has the same id.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from daemon.core.events import Event, JSONValue
from daemon.kube.cache import Cache, Change
from daemon.kube.owners import SOURCE, chain, controller, ref_of
from daemon.kube.stamps import seconds as _seconds

REVISION = "deployment.kubernetes.io/revision"
Obj = dict[str, Any]


def transitions(cache: Cache, change: Change, observed_at: float) -> list[Event]:
    """The Events a change implies; `cache` already holds `change.new`."""
    new = change.new
    if new is None:
        return _deleted(change, observed_at)
    compute = _BY_KIND.get(change.kind)
    if compute is None:
        return []
    return list(compute(_Diff(cache, change, observed_at)))


class _Diff:
    """One change being compared, and what every Event made from it shares."""

    def __init__(self, cache: Cache, change: Change, observed_at: float) -> None:
        assert change.new is not None
        self.cache = cache
        self.change = change
        self.new: Obj = change.new
        self.old: Obj | None = change.old
        self.observed_at = observed_at
        # Edges are unknown on a first listing; states count against nothing before.
        self.edges = not change.initial

    def event(self, action: str, ident: str, attributes: dict[str, JSONValue],
              subject: Obj | None = None, at: str | None = None,
              resolves: tuple[str, ...] = ()) -> Event:
        about = subject if subject is not None else self.new
        ref = ref_of(about)
        attrs: dict[str, JSONValue] = {"name": ref.name, "namespace": ref.namespace}
        attrs.update(self.owner_attributes(about))
        attrs.update(attributes)
        return Event(
            source=SOURCE, kind=ref.kind, action=action,
            subject=ref,
            id=f"{ref.kind}:{ref.id or ref.key}:{action}:{ident}",
            occurred_at=_seconds(at) or self.observed_at, observed_at=self.observed_at,
            attributes=attrs, object=about, synthetic=self.change.synthetic,
            resolves=resolves,
        )

    def owner_attributes(self, obj: Obj) -> dict[str, JSONValue]:
        owners = chain(self.cache, obj)
        if not owners:
            return {}
        attrs: dict[str, JSONValue] = {
            "owner_kind": owners[0].kind, "owner_name": owners[0].name,
            "workload_kind": owners[-1].kind, "workload_name": owners[-1].name}
        revision = _pod_revision(self.cache, obj)
        if revision is not None:
            attrs["revision"] = revision
            # How long ago its ReplicaSet appeared: a crash loop minutes after a rollout
            # points at the rollout. A ReplicaSet reused by a rollback keeps its old age,
            # so a crash loop after a rollback never looks like a fresh bad revision.
            created = _seconds((owners[0].object or {}).get("metadata", {}).get(
                "creationTimestamp"))
            if created is not None:
                attrs["revisionAgeSeconds"] = round(max(self.observed_at - created, 0.0), 3)
        return attrs


# -- Pods ------------------------------------------------------------------------------------

def _pod(diff: _Diff) -> Iterator[Event]:
    # A Pod's transitions compare its status alone, and the same status implies none.
    # The cache shares an unchanged status between the two (daemon.kube.watchdecode):
    # most updates only move the resourceVersion.
    if diff.old is not None and diff.old.get("status") is diff.new.get("status"):
        return
    old_statuses = _container_statuses(diff.old)
    for status in _container_statuses(diff.new).values():
        yield from _container(diff, status, old_statuses.get(status.get("name")))
    yield from _pod_conditions(diff)


def _container(diff: _Diff, status: Obj, old: Obj | None) -> Iterator[Event]:
    name = str(status.get("name", ""))
    restarts = _int(status.get("restartCount"))
    base: dict[str, JSONValue] = {"container": name, "restartCount": restarts,
                                  "image": str(status.get("image", ""))}
    old_restarts = _int(old.get("restartCount")) if old else 0
    if diff.edges and restarts > old_restarts:
        terminated = _terminated(status.get("lastState"))
        yield diff.event("restarted", f"{name}:{restarts}", {
            **base, "previousRestartCount": old_restarts,
            **_termination_attributes(terminated)}, at=_started_at(status))
    waiting = _waiting_reason(status)
    if waiting == "CrashLoopBackOff" and (old is None or _waiting_reason(old) != waiting):
        message = ((status.get("state") or {}).get("waiting") or {}).get("message")
        yield diff.event("crashloop", f"{name}:{restarts}", {
            **base, "reason": waiting, "message": str(message or ""),
            **_termination_attributes(_terminated(status.get("lastState")))})
    if diff.edges:
        yield from _oom(diff, base, status, old)


def _oom(diff: _Diff, base: dict[str, JSONValue], status: Obj, old: Obj | None
         ) -> Iterator[Event]:
    name = str(base["container"])
    seen = {_termination_id(t) for t in _terminations(old)} if old else set()
    for terminated in _terminations(status):
        if terminated.get("reason") == "OOMKilled" and _termination_id(terminated) not in seen:
            yield diff.event("oom_killed", f"{name}:{_termination_id(terminated)}", {
                **base, "reason": "OOMKilled", **_termination_attributes(terminated)},
                at=terminated.get("finishedAt"))


def _pod_conditions(diff: _Diff) -> Iterator[Event]:
    ready = _condition(diff.new, "Ready")
    phase = (diff.new.get("status") or {}).get("phase")
    was_unready = diff.old is not None and _unready(diff.old)
    if _unready(diff.new) and not was_unready:
        # Entered: readiness lost, or a pod that has not become ready since it started.
        assert ready is not None
        since = ready.get("lastTransitionTime")
        yield diff.event("unready", str(since), {
            "reason": str(ready.get("reason") or ""), "message": str(ready.get("message") or ""),
            "since": str(since or ""), "unreadySeconds": _age(since, diff.observed_at),
            "phase": str(phase or "")}, at=since)
    elif was_unready and ready is not None and ready.get("status") == "True":
        old_since = (_condition(diff.old, "Ready") or {}).get("lastTransitionTime")
        since = ready.get("lastTransitionTime")
        yield diff.event("ready", str(since), {
            "since": str(since or ""), "phase": str(phase or ""),
            "unreadySeconds": _between(old_since, since)}, at=since, resolves=("unready",))
    scheduled = _condition(diff.new, "PodScheduled")
    if _is(scheduled, "False", "Unschedulable") and not _is(
            _condition(diff.old, "PodScheduled"), "False", "Unschedulable"):
        assert scheduled is not None
        since = scheduled.get("lastTransitionTime")
        yield diff.event("unschedulable", str(since), {
            "reason": "Unschedulable", "message": str(scheduled.get("message") or ""),
            "since": str(since or ""), "phase": str(phase or "")}, at=since)


# -- Events (probe failures) -----------------------------------------------------------------

def _event(diff: _Diff) -> Iterator[Event]:
    new = diff.new
    if new.get("reason") != "Unhealthy" or not diff.edges:
        return
    count = _event_count(new)
    if diff.old is not None and _event_count(diff.old) >= count:
        return
    involved = new.get("regarding") or new.get("involvedObject") or {}
    if not isinstance(involved, dict) or involved.get("kind") != "Pod":
        return
    namespace = str(involved.get("namespace") or new["metadata"].get("namespace") or "")
    pod = diff.cache.get("Pod", namespace, str(involved.get("name", "")))
    if pod is not None and involved.get("uid") and pod["metadata"].get("uid") != involved["uid"]:
        pod = None  # an older Pod of that name
    subject = pod if pod is not None else _stub_pod(involved, namespace)
    message = str(new.get("note") or new.get("message") or "")
    probe = message.split(" ", 1)[0].lower() if " probe " in message else ""
    yield diff.event("probe_failed", f"{new['metadata'].get('uid', '')}:{count}", {
        "probe": probe, "container": _container_of(involved.get("fieldPath")),
        "message": message, "count": count, "reason": "Unhealthy",
        "eventType": str(new.get("type") or ""), "event": str(new["metadata"]["name"])},
        subject=subject, at=_event_time(new))


# -- Deployments -----------------------------------------------------------------------------

def _deployment(diff: _Diff) -> Iterator[Event]:
    new, old = diff.new, diff.old
    revision, old_revision = _revision(new), _revision(old) if old else None
    if diff.edges and old is not None and (
            (revision is not None and old_revision is not None and revision != old_revision)
            or (revision is None and old_revision is None
                and _spec(new).get("template") != _spec(old).get("template"))):
        yield diff.event("new_revision", str(revision if revision is not None else
                                             new["metadata"].get("generation", "")), {
            "revision": revision, "previousRevision": old_revision,
            "images": _images(new)})
    progressing = _condition(new, "Progressing")
    if _is(progressing, "False", "ProgressDeadlineExceeded") and not _is(
            _condition(old, "Progressing"), "False", "ProgressDeadlineExceeded"):
        assert progressing is not None
        since = progressing.get("lastTransitionTime")
        yield diff.event("progress_deadline_exceeded", f"{revision}:{since}", {
            "reason": "ProgressDeadlineExceeded", "revision": revision,
            "message": str(progressing.get("message") or ""), "since": str(since or "")},
            at=since)


# -- Nodes -----------------------------------------------------------------------------------

def _node(diff: _Diff) -> Iterator[Event]:
    ready, old_ready = _condition(diff.new, "Ready"), _condition(diff.old, "Ready")
    if ready is None:
        return
    if ready.get("status") == "True":
        if old_ready is not None and old_ready.get("status") != "True":
            since = ready.get("lastTransitionTime")
            yield diff.event("ready", str(since), {
                "since": str(since or ""),
                "notReadySeconds": _between(old_ready.get("lastTransitionTime"), since)},
                at=since, resolves=("not_ready",))
        return
    if old_ready is not None and old_ready.get("status") != "True":
        return  # already not ready (False -> Unknown is the same outage)
    if diff.old is not None and old_ready is None:
        return
    since = ready.get("lastTransitionTime")
    yield diff.event("not_ready", str(since), {
        "status": str(ready.get("status")), "reason": str(ready.get("reason") or ""),
        "message": str(ready.get("message") or ""), "since": str(since or ""),
        "unschedulable": bool(_spec(diff.new).get("unschedulable"))}, at=since)


# -- deletions -------------------------------------------------------------------------------

def _deleted(change: Change, observed_at: float) -> list[Event]:
    """A watched object gone: what waited on it (a `for`, an occurrence count) ends."""
    old = change.old
    if old is None or change.kind not in _BY_KIND or change.kind == "Event":
        return []
    ref = ref_of(old)
    return [Event(source=SOURCE, kind=ref.kind, action="deleted", subject=ref,
                  id=f"{ref.kind}:{ref.id or ref.key}:deleted", occurred_at=observed_at,
                  observed_at=observed_at, attributes={"name": ref.name,
                                                       "namespace": ref.namespace},
                  object=old, synthetic=change.synthetic, resolves=("*",))]


_BY_KIND: dict[str, Callable[[_Diff], Iterator[Event]]] = {
    "Pod": _pod, "Event": _event, "Deployment": _deployment, "Node": _node,
}


# -- reading trimmed objects -----------------------------------------------------------------

def _spec(obj: Obj | None) -> Obj:
    spec = obj.get("spec") if obj else None
    return spec if isinstance(spec, dict) else {}


def _condition(obj: Obj | None, kind: str) -> Obj | None:
    status = obj.get("status") if obj else None
    for condition in (status or {}).get("conditions") or ():
        if isinstance(condition, dict) and condition.get("type") == kind:
            return condition
    return None


def _unready(pod: Obj) -> bool:
    """Running, and its Ready condition says not (False, or Unknown on a lost node)."""
    ready = _condition(pod, "Ready")
    return ready is not None and ready.get("status") != "True" and (
        (pod.get("status") or {}).get("phase") == "Running")


def _is(condition: Obj | None, status: str, reason: str) -> bool:
    return condition is not None and condition.get("status") == status and (
        condition.get("reason") == reason)


def _container_statuses(pod: Obj | None) -> dict[Any, Obj]:
    status = (pod.get("status") if pod else None) or {}
    statuses = [*(status.get("initContainerStatuses") or ()),
                *(status.get("containerStatuses") or ())]
    return {s.get("name"): s for s in statuses if isinstance(s, dict)}


def _waiting_reason(status: Obj) -> str | None:
    waiting = (status.get("state") or {}).get("waiting")
    return waiting.get("reason") if isinstance(waiting, dict) else None


def _terminated(state: Any) -> Obj | None:
    terminated = state.get("terminated") if isinstance(state, dict) else None
    return terminated if isinstance(terminated, dict) else None


def _terminations(status: Obj) -> list[Obj]:
    found = (_terminated(status.get("state")), _terminated(status.get("lastState")))
    return [t for t in found if t is not None]


def _termination_id(terminated: Obj) -> str:
    return f"{terminated.get('containerID', '')}@{terminated.get('finishedAt', '')}"


def _termination_attributes(terminated: Obj | None) -> dict[str, JSONValue]:
    if terminated is None:
        return {}
    return {"lastReason": str(terminated.get("reason") or ""),
            "exitCode": _int(terminated.get("exitCode")),
            "finishedAt": str(terminated.get("finishedAt") or "")}


def _started_at(status: Obj) -> str | None:
    running = (status.get("state") or {}).get("running")
    return running.get("startedAt") if isinstance(running, dict) else None


def _pod_revision(cache: Cache, obj: Obj) -> int | None:
    """A Pod's Deployment revision: its ReplicaSet's revision annotation."""
    if obj.get("kind") != "Pod":
        return None
    owner = controller(cache, obj)
    if owner is None or owner.kind != "ReplicaSet" or owner.object is None:
        return None
    return _revision(owner.object)


def _revision(obj: Obj | None) -> int | None:
    annotations = (obj or {}).get("metadata", {}).get("annotations") or {}
    try:
        return int(annotations[REVISION])
    except (KeyError, TypeError, ValueError):
        return None


def _images(obj: Obj) -> list[JSONValue]:
    template = _spec(obj).get("template") or {}
    containers = (template.get("spec") or {}).get("containers") or ()
    return [str(c.get("image", "")) for c in containers if isinstance(c, dict)]


def _event_count(event: Obj) -> int:
    series = event.get("series")
    if isinstance(series, dict) and series.get("count"):
        return _int(series["count"])
    return _int(event.get("count") or event.get("deprecatedCount") or 1)


def _event_time(event: Obj) -> str | None:
    series = event.get("series")
    last = series.get("lastObservedTime") if isinstance(series, dict) else None
    return (last or event.get("lastTimestamp") or event.get("deprecatedLastTimestamp")
            or event.get("eventTime"))


def _container_of(field_path: Any) -> str:
    # "spec.containers{app}" -> "app"
    if isinstance(field_path, str) and "{" in field_path and field_path.endswith("}"):
        return field_path[field_path.index("{") + 1:-1]
    return ""


def _stub_pod(involved: Obj, namespace: str) -> Obj:
    """The Pod an Event names, when the cache does not hold it (yet)."""
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {
        "name": str(involved.get("name", "")), "namespace": namespace,
        "uid": str(involved.get("uid") or "")}}


def _int(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def _between(start: Any, end: Any) -> float:
    first, last = _seconds(start), _seconds(end)
    return round(max(last - first, 0.0), 3) if first is not None and last is not None else 0.0


def _age(stamp: Any, now: float) -> float:
    at = _seconds(stamp)
    return round(max(now - at, 0.0), 3) if at is not None else 0.0
